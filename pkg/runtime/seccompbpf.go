package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// crun compiles a container's seccomp profile into a BPF program with
// libseccomp at every create (3-4.5 ms of a `crun create` here for
// containerd's default profile), and writes the program it loads into the
// container's state directory (<root>/<id>/seccomp.bpf, which its exec
// reads again; the runc shim's default root, which the agent keeps). Given
// the program in the annotation AnnotationSeccompBPF, it loads that
// instead and compiles nothing. The agent keeps, per profile, the program
// crun compiled for the first crun sandbox that had it, read from that
// sandbox's state directory once its task exists, and hands it to every
// later crun sandbox with the same profile. No filter is compiled by the
// agent itself (that would need libseccomp, and so cgo, in the static
// binary): what a sandbox gets is exactly what crun made of the same
// profile on this node, read from a root-only host directory that crun
// fills before the sandbox's first process runs and that no sandbox can
// reach. The program is kernel ABI for the profile, so it stays right for
// the agent's life; a crun or libseccomp upgrade takes effect for crun
// sandboxes when the agent restarts.

// AnnotationSeccompBPF is crun's annotation for a precompiled seccomp
// filter: the base64 of the raw BPF program, loaded in place of compiling
// the spec's profile.
const AnnotationSeccompBPF = "run.oci.seccomp_bpf_data"

// seccompBPFFile is where crun writes, in a container's state directory,
// the seccomp program it loaded.
const seccompBPFFile = "seccomp.bpf"

// maxBPFInstructions is the kernel's bound on a classic BPF program
// (BPF_MAXINSNS); each instruction takes 8 bytes.
const maxBPFInstructions = 4096

// seccompFilters holds the compiled filters learnt from crun, by profile.
type seccompFilters struct {
	mu sync.Mutex
	// byKey holds base64 programs by seccompKey.
	byKey map[string]string
	// pending holds, by container ID, the seccompKey of crun containers
	// made without a filter, whose task has yet to compile one. Entries of
	// creates that failed before their task are dropped in bulk past
	// maxPending: all they cost is a chance to learn, which the next crun
	// create takes again.
	pending map[string]string
}

// maxPending bounds seccompFilters.pending.
const maxPending = 64

// seccompKey identifies a profile as a runtime binary compiles it.
func seccompKey(binary string, profile *specs.LinuxSeccomp) (string, error) {
	b, err := json.Marshal(profile)
	if err != nil {
		return "", fmt.Errorf("seccomp profile: %w", err)
	}
	sum := sha256.Sum256(b)
	return binary + "\x00" + string(sum[:]), nil
}

func (f *seccompFilters) get(key string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	bpf, ok := f.byKey[key]
	return bpf, ok
}

func (f *seccompFilters) put(key, bpf string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.byKey == nil {
		f.byKey = make(map[string]string)
	}
	f.byKey[key] = bpf
}

// expect notes that container id is made without the filter for key.
func (f *seccompFilters) expect(id, key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending == nil || len(f.pending) >= maxPending {
		f.pending = make(map[string]string)
	}
	f.pending[id] = key
}

// expected returns and forgets the key expect noted for container id.
func (f *seccompFilters) expected(id string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key, ok := f.pending[id]
	delete(f.pending, id)
	return key, ok
}

// usesSeccompCache reports whether sandboxes of the named runtime get and
// give precompiled filters: crun's alone reads AnnotationSeccompBPF.
func (r *Runtime) usesSeccompCache(runtime string) bool {
	return runtimeName(runtime) == RuntimeCrun && r.filters != nil
}

// precompiledSeccomp is the spec option, after the profile is set, that
// gives a crun sandbox the filter crun compiled for the same profile
// before, when the agent has it. Without one the spec is left as it is:
// crun compiles the profile, and learnSeccomp keeps what it made.
func (r *Runtime) precompiledSeccomp(runtime string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, c *containers.Container, s *oci.Spec) error {
		if !r.usesSeccompCache(runtime) || s.Linux == nil || s.Linux.Seccomp == nil {
			return nil
		}
		key, err := seccompKey(r.cfg.Runtimes[RuntimeCrun], s.Linux.Seccomp)
		if err != nil {
			return err
		}
		bpf, ok := r.filters.get(key)
		if !ok {
			r.filters.expect(c.ID, key)
			return nil
		}
		if s.Annotations == nil {
			s.Annotations = make(map[string]string)
		}
		s.Annotations[AnnotationSeccompBPF] = bpf
		return nil
	}
}

// learnSeccomp keeps the filter crun compiled for container id, whose
// task it has just created, when id was made without one. A filter it
// cannot read is logged and left: the next crun create compiles again.
func (r *Runtime) learnSeccomp(ctx context.Context, id string) {
	if r.filters == nil {
		return
	}
	key, ok := r.filters.expected(id)
	if !ok {
		return
	}
	if _, ok := r.filters.get(key); ok {
		return
	}
	ns, err := r.namespace(ctx)
	if err != nil {
		return
	}
	bpf, err := readSeccompBPF(filepath.Join(runcRoot, ns, id, seccompBPFFile))
	if err != nil {
		r.cfg.Logger.Warn("crun's compiled seccomp filter not kept; the next crun sandbox compiles it again",
			slog.String("container", id), slog.Any("err", err))
		return
	}
	r.filters.put(key, base64.StdEncoding.EncodeToString(bpf))
	r.cfg.Logger.Debug("kept crun's compiled seccomp filter for later crun sandboxes",
		slog.String("container", id), slog.Int("instructions", len(bpf)/8))
}

// readSeccompBPF reads a classic BPF program from path and checks that it
// has the shape the kernel accepts: whole instructions, at least one, at
// most maxBPFInstructions.
func readSeccompBPF(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// One byte past the largest program tells a too large one apart.
	buf, err := io.ReadAll(io.LimitReader(f, maxBPFInstructions*8+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	n := len(buf)
	switch {
	case n == 0:
		return nil, fmt.Errorf("%s is empty", path)
	case n > maxBPFInstructions*8:
		return nil, fmt.Errorf("%s holds more than %d instructions", path, maxBPFInstructions)
	case n%8 != 0:
		return nil, fmt.Errorf("%s holds %d bytes, not whole 8-byte instructions", path, n)
	}
	return buf, nil
}
