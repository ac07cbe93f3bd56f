// Package runtime runs sandboxes as containerd containers: one container and
// one task per sandbox revision, with fsb init as PID 1 and fsb log-driver
// writing its output. It is the agent's only way to containerd.
package runtime

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// Labels every sandbox container carries. The agent adopts and counts only
// containers whose LabelAgent is its own ID.
const (
	LabelID        = "sandbox.fast.io/id"
	LabelRevision  = "sandbox.fast.io/revision"
	LabelNamespace = "sandbox.fast.io/namespace"
	LabelName      = "sandbox.fast.io/name"
	LabelAgent     = "sandbox.fast.io/agent"
	LabelLogPath   = "sandbox.fast.io/log-path"
	// LabelPersisted is set once the sandbox's object is in the store.
	// A persisted container without an object was deleted; an unmarked one
	// is a FAST create whose object write was lost, and gets it back.
	LabelPersisted = "sandbox.fast.io/persisted"
	// LabelStarted is set as soon as the sandbox's task has started. A
	// container without a task is a create cut short, to finish, unless it
	// carries this label: then its task went after it ran (a host reboot, a
	// lost shim), and it is reported lost, never started again.
	LabelStarted = "sandbox.fast.io/started"
	// LabelWarm marks a warm sandbox (warm.go): a container running fsb
	// init without a main process, kept for a claim. Its value is the
	// sandbox kind's key (v1alpha1.WarmKey). A warm container carries no
	// sandbox identity; the claim takes the label off.
	LabelWarm = "sandbox.fast.io/warm"
	// LabelClaimed marks a sandbox made by claiming a warm one.
	LabelClaimed = "sandbox.fast.io/claimed"
	// LabelMainStarted is set on a claimed sandbox once init started its
	// main process: a claimed container without it is a claim cut short,
	// which Ensure and Repair finish.
	LabelMainStarted = "sandbox.fast.io/main-started"
	// LabelUserPrefix starts the container label of each of the Sandbox
	// object's own labels.
	LabelUserPrefix = "label.sandbox.fast.io/"
)

// ExtensionSpec names the container extension that holds the sandbox's full
// spec (an fsbv1.SandboxSpec), so that an agent or controller can rebuild the
// sandbox's object from the container alone.
const ExtensionSpec = "sandbox.fast.io/spec"

// InitPath is where fsb init is bind-mounted inside every sandbox.
const InitPath = "/.fsb/init"

// Runtime names an agent accepts in a spec.
const (
	RuntimeRunc   = "runc"
	RuntimeCrun   = "crun"
	RuntimeGVisor = "gvisor"
)

// DefaultPullTimeout bounds an image pull when Config.PullTimeout is 0.
const DefaultPullTimeout = 2 * time.Minute

// runcRoot is where containerd's runc shim keeps runtime state, per
// namespace; runsc behind the shim keeps its own there too.
const runcRoot = "/run/containerd/runc"

// Errors that the agent maps to API codes.
var (
	// ErrInvalid marks a spec that cannot run as asked.
	ErrInvalid = errors.New("invalid sandbox")
	// ErrImageNotFound marks an image that is not present and that its
	// registry does not have.
	ErrImageNotFound = errors.New("image not found")
	// ErrRegistryUnavailable marks a pull that could not reach the image's
	// registry: refused or reset connections, names that do not resolve,
	// no answer within the pull timeout, 5xx answers. Worth a retry.
	ErrRegistryUnavailable = errors.New("registry unavailable")
	// ErrRegistryDenied marks a pull the registry refused access to (401,
	// 403): the credentials are missing or wrong. Not worth a retry.
	ErrRegistryDenied = errors.New("registry denied access")
	// ErrUnavailable marks a runtime this node does not offer.
	ErrUnavailable = errors.New("not available on this agent")
	// ErrExists marks a sandbox container that another agent owns.
	ErrExists = errors.New("sandbox exists")
)

// Config is what a Runtime needs.
type Config struct {
	Client *containerd.Client
	// AgentID is written into every container's labels.
	AgentID string
	// InitBinary is the host path of the static fsb binary mounted as PID 1.
	InitBinary string
	// LogDriverBinary is the host path of the fsb binary the shim runs to
	// write logs.
	LogDriverBinary string
	// LogDir holds <namespace>/<name>/<sandboxID>-<revision>.log.
	LogDir string
	// LogMaxSize and LogMaxFiles rotate each log file; 0 never rotates.
	LogMaxSize  int64
	LogMaxFiles int
	// MaxRevisionLogs is how many revisions' logs are kept per sandbox:
	// once revision N is created, the logs of revisions up to
	// N-MaxRevisionLogs are removed. 0 keeps every revision's.
	MaxRevisionLogs int
	// NetNSPath is the network namespace sandboxes join; empty means the
	// calling process's own.
	NetNSPath string
	// DefaultPidsLimit applies when a spec sets no pids limit.
	DefaultPidsLimit int64
	// SeccompCompatArches keeps the 32-bit compat system call ABIs in the
	// seccomp filter, as Docker does; by default only the native ABI passes.
	SeccompCompatArches bool
	// Snapshotter for root filesystems; empty means containerd's default.
	Snapshotter string
	// ImageNamespaces are other containerd namespaces (such as k8s.io, where
	// the kubelet keeps its pulls) whose images a sandbox may use without a
	// pull: the content is shared, only the records are copied.
	ImageNamespaces []string
	// PullTimeout bounds one image pull; past it the registry counts as
	// unavailable. 0 means DefaultPullTimeout.
	PullTimeout time.Duration
	// RegistryConfigPath is a directory of containerd hosts.toml files
	// (<dir>/<host>/hosts.toml) naming mirrors, TLS and plain-HTTP
	// registries for pulls. Registries on loopback always use plain HTTP.
	RegistryConfigPath string
	// Logger receives what the runtime cannot return: event stream trouble.
	Logger *slog.Logger
	// Runtimes maps a runtime name to the OCI binary the runc shim runs:
	// "runc", "crun", and for "gvisor" a runsc wrapper (see WriteRunscWrapper).
	Runtimes map[string]string
	// LinkDir holds each sandbox's link directory (<LinkDir>/<16 hex of
	// sha256(container ID)>: the socket fsb init dials, see pkg/initlink).
	// Empty means DefaultLinkDir. An agent removes, at its start, the link
	// directories that no container of its containerd owns and that no one
	// listens in: agents of different containerd daemons should not share
	// one, or one that starts while another is down removes the other's.
	LinkDir string
	// CgroupParent is the cgroup sandboxes' cgroups are made under
	// (<CgroupParent>/<namespace>/<container ID>), an absolute path such as
	// an agent pod's /kubepods/besteffort/pod<uid>, so that the node
	// accounts for them as the pod's; empty means the root, where
	// containerd would put a task by default.
	CgroupParent string
}

// Runtime creates, inspects and deletes sandbox containers, and keeps their
// state in memory from containerd's events (see Watch).
type Runtime struct {
	cfg    Config
	images *imageCache
	locks  keyedMutex

	stateMu    sync.Mutex
	state      map[string]Info // by container ID
	imageNames []string        // image names in the namespace, sorted
	changed    chan struct{}   // closed at every change of state or images
	// rollbacks are creates whose roll back failed (containerd went away
	// mid-create), by container ID with their runtime name: Watch removes
	// them once containerd is back (rollback.go).
	rollbacks map[string]string
	// claims are the claims this agent made or settled, by container ID,
	// kept until the container is gone (claimjournal.go): what is read
	// from containerd is read through them, so that a read that raced a
	// claim's relabel never shows a claimed container as warm.
	claims map[string]claimRecord
	// stops are the deletes' stops under way, by container ID: a delete
	// with a shorter grace period brings their kill forward (delete.go).
	stops map[string]*pendingStop

	// linkMu guards links: the open links to the inits of sandboxes, by
	// container ID (link.go).
	linkMu sync.Mutex
	links  map[string]*initlink.Link

	// filters are the seccomp filters crun compiled, which later crun
	// sandboxes get precompiled (seccompbpf.go).
	filters *seccompFilters
	// users are the images' resolved process users (imageuser.go).
	users *imageUsers
}

// New returns a Runtime for cfg. The client's default namespace is used.
func New(cfg Config) (*Runtime, error) {
	if cfg.Client == nil {
		return nil, errors.New("runtime: no containerd client")
	}
	if cfg.InitBinary == "" || cfg.LogDriverBinary == "" {
		return nil, errors.New("runtime: init and log driver binaries must be set")
	}
	for _, p := range []string{cfg.InitBinary, cfg.LogDriverBinary} {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("runtime: %q must be an absolute path", p)
		}
	}
	// The init binary runs inside images that have no C library.
	if err := checkStatic(cfg.InitBinary); err != nil {
		return nil, fmt.Errorf("runtime: init binary: %w", err)
	}
	if cfg.NetNSPath == "" {
		cfg.NetNSPath = fmt.Sprintf("/proc/%d/ns/net", os.Getpid())
	}
	if cfg.Runtimes == nil {
		cfg.Runtimes = map[string]string{RuntimeRunc: "runc"}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PullTimeout <= 0 {
		cfg.PullTimeout = DefaultPullTimeout
	}
	if cfg.LinkDir == "" {
		cfg.LinkDir = DefaultLinkDir
	}
	if p := cfg.CgroupParent; p != "" && (!filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/") {
		return nil, fmt.Errorf("runtime: cgroup parent %q: want an absolute, clean path below the root", p)
	}
	if err := checkLinkDir(cfg.LinkDir); err != nil {
		return nil, err
	}
	// Root's alone: a host user who shares a sandbox's uid could otherwise
	// reach its link directory, which that uid owns, and replace the socket.
	if err := os.MkdirAll(cfg.LinkDir, 0o700); err != nil {
		return nil, fmt.Errorf("runtime: link dir: %w", err)
	}
	if err := os.Chmod(cfg.LinkDir, 0o700); err != nil {
		return nil, fmt.Errorf("runtime: link dir: %w", err)
	}
	return &Runtime{
		cfg:       cfg,
		images:    newImageCache(cfg),
		state:     make(map[string]Info),
		changed:   make(chan struct{}),
		rollbacks: make(map[string]string),
		claims:    make(map[string]claimRecord),
		stops:     make(map[string]*pendingStop),
		links:     make(map[string]*initlink.Link),
		filters:   &seccompFilters{},
		users:     &imageUsers{},
	}, nil
}

// checkStatic fails unless path is a statically linked executable.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; build it with CGO_ENABLED=0 (make build)", path)
		}
	}
	return nil
}

// Sandbox is one revision of a sandbox to run.
type Sandbox struct {
	ID        string
	Revision  int64
	Namespace string
	Name      string
	Spec      *fsbv1.SandboxSpec
	// Labels are the Sandbox object's labels, kept with the container.
	Labels map[string]string
	// Persisted says the sandbox's object is already in the store.
	Persisted bool
	// Proceed, when set, is asked once the image is there, before Ensure
	// makes the container: an error ends the create with nothing made.
	// The agent checks there that its caller still leads (pkg/fence).
	Proceed func() error
	// Claim, when set, names a warm container (WarmSandboxes) that the
	// caller took for this sandbox alone: unless the sandbox's container
	// exists already, Ensure makes the sandbox from it rather than anew.
	// A claim that fails removes the warm container and falls back to a
	// cold create.
	Claim string

	// warm is the kind's key when this is a warm sandbox to make.
	warm string
}

// Phase of a sandbox's container as containerd reports it.
type Phase int

// Phases, in the order a sandbox goes through them.
const (
	// PhaseCreated: the container exists but its task has not started.
	PhaseCreated Phase = iota
	PhaseRunning
	PhaseExited
)

// Info is the observed state of one sandbox container.
type Info struct {
	ContainerID string
	ID          string
	Revision    int64
	Namespace   string
	Name        string
	Spec        *fsbv1.SandboxSpec
	Labels      map[string]string
	LogPath     string
	Created     time.Time
	Phase       Phase
	// ExitCode and ExitTime are set once Phase is PhaseExited.
	ExitCode uint32
	ExitTime time.Time
	// Reason says why it exited: ReasonCompleted, ReasonError,
	// ReasonOOMKilled or ReasonLost.
	Reason string
	// Persisted says the sandbox's object is in the store (LabelPersisted).
	Persisted bool
	// Warm is the kind's key of a warm sandbox (LabelWarm): one kept for a
	// claim, which is no sandbox yet; empty for every sandbox.
	Warm string
	// Claimed says the sandbox was made by claiming a warm one.
	Claimed bool
	// mainStarted says init started a claimed sandbox's main process (or
	// a claim journal holds the claim, which settleClaim finishes).
	mainStarted bool
	// specBytes is how many bytes the container's OCI spec takes.
	specBytes int

	oom bool // the OOM killer struck in the sandbox
	// started says the task has started once (LabelStarted); lost, that
	// it has no task now although it started: it ended unseen.
	started, lost bool
	// pid is the process ID of the task the phase is about, 0 while
	// unknown. containerd's events name the task by its pid: an exit of
	// another task of the same container (one that never ran, deleted so
	// that a create could go on) is not this task's exit.
	pid uint32

	agent string
}

// ContainerID is the containerd ID of a sandbox revision.
func ContainerID(sandboxID string, revision int64) string {
	return sandboxID + "-" + strconv.FormatInt(revision, 10)
}

// LogPath is where the log driver writes a sandbox revision's output.
func (r *Runtime) LogPath(sb Sandbox) string {
	return filepath.Join(r.cfg.LogDir, sb.Namespace, sb.Name, ContainerID(sb.ID, sb.Revision)+".log")
}

// Runtimes lists the runtime names this Runtime can start.
func (r *Runtime) Runtimes() []string {
	names := make([]string, 0, len(r.cfg.Runtimes))
	for _, n := range []string{RuntimeRunc, RuntimeCrun, RuntimeGVisor} {
		if _, ok := r.cfg.Runtimes[n]; ok {
			names = append(names, n)
		}
	}
	return names
}

// listImages asks containerd for the image names in the agent's namespace.
func (r *Runtime) listImages(ctx context.Context) ([]string, error) {
	imgs, err := r.cfg.Client.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	names := make([]string, len(imgs))
	for i, img := range imgs {
		names[i] = img.Name
	}
	slices.Sort(names)
	return names, nil
}

// keyedMutex serializes work on one key while other keys go on in parallel.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedLock
}

type keyedLock struct {
	sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = make(map[string]*keyedLock)
	}
	l := k.locks[key]
	if l == nil {
		l = &keyedLock{}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.Lock()
	return func() { k.release(key, l) }
}

// tryLock locks key unless someone holds or waits for it; ok is false
// then, and unlock nil.
func (k *keyedMutex) tryLock(key string) (unlock func(), ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.locks[key] != nil {
		return nil, false
	}
	if k.locks == nil {
		k.locks = make(map[string]*keyedLock)
	}
	l := &keyedLock{refs: 1}
	l.Lock()
	k.locks[key] = l
	return func() { k.release(key, l) }, true
}

// release unlocks l, the lock of key, and forgets it once nobody holds or
// waits for it.
func (k *keyedMutex) release(key string, l *keyedLock) {
	l.Unlock()
	k.mu.Lock()
	if l.refs--; l.refs == 0 {
		delete(k.locks, key)
	}
	k.mu.Unlock()
}

func ignoreNotFound(err error) error {
	if errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

// Ping reports whether containerd answers.
func (r *Runtime) Ping(ctx context.Context) error {
	serving, err := r.cfg.Client.IsServing(ctx)
	if err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	if !serving {
		return errors.New("containerd is not serving")
	}
	return nil
}
