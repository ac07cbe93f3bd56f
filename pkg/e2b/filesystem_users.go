package e2b

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// Limits of the sandbox accounts the file API reads.
const (
	// accountsTTL is how long a sandbox's /etc/passwd and /etc/group are
	// trusted once read: a user added by a command shows up this late in
	// the owner of an entry, or in the home a relative path resolves in.
	accountsTTL = 5 * time.Second
	// maxAccountsCached bounds the sandboxes whose accounts are kept.
	maxAccountsCached = 256
	// maxAccountsFile bounds what is read of /etc/passwd or /etc/group.
	maxAccountsFile = 1 << 20
)

// sandboxAccounts is what a sandbox's /etc/passwd and /etc/group say.
type sandboxAccounts struct {
	users  map[string]passwdUser
	owners map[uint32]string // uid -> user name
	groups map[uint32]string // gid -> group name
}

// passwdUser is one user of /etc/passwd.
type passwdUser struct {
	uid, gid uint32
	home     string
}

// owner returns the name of uid, or the number when the sandbox names none,
// as envd does.
func (a *sandboxAccounts) owner(uid uint32) string {
	if n, ok := a.owners[uid]; ok {
		return n
	}
	return strconv.FormatUint(uint64(uid), 10)
}

// group returns the name of gid, or the number when the sandbox names none.
func (a *sandboxAccounts) group(gid uint32) string {
	if n, ok := a.groups[gid]; ok {
		return n
	}
	return strconv.FormatUint(uint64(gid), 10)
}

// fsUser is the user a file request acts for.
type fsUser struct {
	name string
	home string
	// uid and gid are known (known) when /etc/passwd names the user:
	// what the request makes is then given to them.
	uid, gid uint32
	known    bool
}

// root reports whether the user is root, who needs no chown.
func (u fsUser) root() bool { return u.known && u.uid == 0 }

// accountCache reads sandboxes' accounts through the API, a few seconds
// at a time.
type accountCache struct {
	api API
	mu  sync.Mutex
	// entries by sandbox key (namespace/ID).
	entries map[string]cachedAccounts
}

type cachedAccounts struct {
	read time.Time
	acc  *sandboxAccounts
}

func newAccountCache(api API) *accountCache {
	return &accountCache{api: api, entries: map[string]cachedAccounts{}}
}

// get returns sb's accounts. It never fails: a sandbox whose files cannot
// be read has none, and then owners are numbers and only root and
// DefaultUser resolve (see user). Only what was read is cached.
func (c *accountCache) get(ctx context.Context, sb *Sandbox) *sandboxAccounts {
	key := sb.Namespace + "/" + sb.ID
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok && time.Since(e.read) < accountsTTL {
		return e.acc
	}
	acc := &sandboxAccounts{users: map[string]passwdUser{}, owners: map[uint32]string{}, groups: map[uint32]string{}}
	passwd, perr := readSandboxFile(ctx, c.api, sb, "/etc/passwd", maxAccountsFile)
	group, gerr := readSandboxFile(ctx, c.api, sb, "/etc/group", maxAccountsFile)
	parseAccounts(acc, passwd, group)
	if (perr != nil && connect.CodeOf(perr) != connect.CodeNotFound) || (gerr != nil && connect.CodeOf(gerr) != connect.CodeNotFound) {
		return acc
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxAccountsCached {
		for k, e := range c.entries {
			if time.Since(e.read) >= accountsTTL {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= maxAccountsCached {
			clear(c.entries)
		}
	}
	c.entries[key] = cachedAccounts{read: time.Now(), acc: acc}
	return acc
}

// user returns the user name, as the sandbox's /etc/passwd has it. envd
// refuses a user the sandbox does not have; so does this, except root and
// DefaultUser, whose homes are known without it (a busybox image has no
// "user").
// The accounts read are returned too.
func (c *accountCache) user(ctx context.Context, sb *Sandbox, name string) (fsUser, *sandboxAccounts, error) {
	acc := c.get(ctx, sb)
	if a, ok := acc.users[name]; ok {
		home := a.home
		if !path.IsAbs(home) {
			home = "/"
		}
		return fsUser{name: name, home: path.Clean(home), uid: a.uid, gid: a.gid, known: true}, acc, nil
	}
	switch name {
	case "root":
		return fsUser{name: name, home: knownHome(name), known: true}, acc, nil
	case DefaultUser:
		return fsUser{name: name, home: knownHome(name)}, acc, nil
	}
	return fsUser{}, nil, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("user %q: the sandbox's /etc/passwd has no such user", name))
}

// parseAccounts fills acc from the text of /etc/passwd and /etc/group;
// lines it cannot read are skipped.
func parseAccounts(acc *sandboxAccounts, passwd, group []byte) {
	for line := range passwdLines(passwd) {
		// name:password:uid:gid:gecos:home:shell
		f := strings.Split(line, ":")
		if len(f) < 6 || f[0] == "" {
			continue
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		if _, dup := acc.users[f[0]]; !dup {
			acc.users[f[0]] = passwdUser{uid: uint32(uid), gid: uint32(gid), home: f[5]}
		}
		if _, dup := acc.owners[uint32(uid)]; !dup {
			acc.owners[uint32(uid)] = f[0]
		}
	}
	for line := range passwdLines(group) {
		// name:password:gid:members
		f := strings.Split(line, ":")
		if len(f) < 3 || f[0] == "" {
			continue
		}
		gid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			continue
		}
		if _, dup := acc.groups[uint32(gid)]; !dup {
			acc.groups[uint32(gid)] = f[0]
		}
	}
}

// passwdLines yields b's lines that are neither empty nor comments.
func passwdLines(b []byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 0, 4096), maxAccountsFile)
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			if !yield(l) {
				return
			}
		}
	}
}

// errFileTooLarge ends readSandboxFile's read of a file above its limit.
var errFileTooLarge = errors.New("file too large")

// readSandboxFile reads the regular file p of sb whole, refusing one of more
// than limit bytes.
func readSandboxFile(ctx context.Context, api API, sb *Sandbox, p string, limit int) ([]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := api.ReadFile(ctx, connect.NewRequest(&fsbv1.ReadFileRequest{Name: sb.ID, Namespace: sb.Namespace, Path: p}))
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var b []byte
	for s.Receive() {
		if len(b)+len(s.Msg().GetData()) > limit {
			return nil, fmt.Errorf("read %s: %w: more than %d bytes", p, errFileTooLarge, limit)
		}
		b = append(b, s.Msg().GetData()...)
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	return b, nil
}
