package pid1

import (
	"bufio"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// Where the sandbox names its users and groups.
var (
	passwdFile = "/etc/passwd"
	groupFile  = "/etc/group"
)

// lookupUser resolves "user[:group]", each a name or a number, into the
// credential to start a process with and the user's home directory. An
// empty spec means init's own user: no credential.
func lookupUser(spec string) (*syscall.Credential, string, error) {
	if spec == "" {
		return nil, "", nil
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	var (
		name string
		home string
		uid  uint32
		gid  uint32
	)
	if n, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		uid = uint32(n)
		// A uid not in /etc/passwd runs with group 0, as Docker does.
		if e := findEntry(passwdFile, func(f []string) bool { return len(f) >= 6 && f[2] == userPart }); e != nil {
			name, home = e[0], e[5]
			gid = parseID(e[3])
		}
	} else {
		e := findEntry(passwdFile, func(f []string) bool { return len(f) >= 6 && f[0] == userPart })
		if e == nil {
			return nil, "", errorf(initlink.CodeNotFound, "exec: user %q: not in the sandbox's %s", userPart, passwdFile)
		}
		name, home = e[0], e[5]
		uid, gid = parseID(e[2]), parseID(e[3])
	}
	if hasGroup {
		if n, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			gid = uint32(n)
		} else {
			e := findEntry(groupFile, func(f []string) bool { return len(f) >= 3 && f[0] == groupPart })
			if e == nil {
				return nil, "", errorf(initlink.CodeNotFound, "exec: group %q: not in the sandbox's %s", groupPart, groupFile)
			}
			gid = parseID(e[2])
		}
	}
	groups := []uint32{}
	if name != "" {
		eachEntry(groupFile, func(f []string) bool {
			if len(f) >= 4 && slices.Contains(strings.Split(f[3], ","), name) {
				if g := parseID(f[2]); g != gid && !slices.Contains(groups, g) {
					groups = append(groups, g)
				}
			}
			return false
		})
	}
	return &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}, home, nil
}

// findEntry returns the fields of the first line of file that match.
func findEntry(file string, match func([]string) bool) []string {
	var found []string
	eachEntry(file, func(f []string) bool {
		if match(f) {
			found = f
			return true
		}
		return false
	})
	return found
}

// eachEntry calls fn with the colon-separated fields of each line of file
// until it returns true. A missing file has no lines.
func eachEntry(file string, fn func([]string) bool) {
	f, err := os.Open(file)
	if err != nil {
		return
	}
	defer f.Close()
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		line := lines.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if fn(strings.Split(line, ":")) {
			return
		}
	}
}

func parseID(s string) uint32 {
	n, _ := strconv.ParseUint(s, 10, 32)
	return uint32(n)
}
