package bench

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/opencontainers/runtime-spec/specs-go"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// MinExecN is the fewest execs an exec bench times: fewer make a p99 of
// nothing.
const MinExecN = 100

// DefaultFileSize is the size of the exec bench's upload and download.
const DefaultFileSize = 100 << 20

// ExecBenchOptions say what an exec bench does.
type ExecBenchOptions struct {
	// N execs are timed (at least MinExecN).
	N int
	// Namespace holds the bench's one sandbox; empty means "default".
	Namespace string
	// Mode, Image and Runtime make up the sandbox, as for Load.
	Mode, Image, Runtime string
	// Command is what each exec runs; it must print at once.
	Command []string
	// StepTimeout bounds each exec, each transfer, the create and the
	// delete; zero means DefaultStepTimeout.
	StepTimeout time.Duration
	// FileSize is the size of the upload and download; 0 skips them.
	FileSize int64
	// Containerd, when set, is the agent's containerd (its default
	// namespace the agent's): containerd's own exec into the sandbox's
	// task is timed beside fsb's, interleaved.
	Containerd *containerd.Client
}

// Transfer is one file transfer: bytes over time.
type Transfer struct {
	Bytes    int64
	Duration time.Duration
}

// MiBps returns the transfer's rate in MiB/s.
func (t Transfer) MiBps() float64 {
	if t.Duration <= 0 {
		return 0
	}
	return float64(t.Bytes) / (1 << 20) / t.Duration.Seconds()
}

// ExecBenchResult is what an exec bench measured.
type ExecBenchResult struct {
	Runtime string
	N       int
	// Exec holds request-to-first-output-byte of fsb's execs, Baseline
	// Exec-call-to-first-byte of containerd's.
	Exec, Baseline []time.Duration
	// Upload and Download are WriteFile and ReadFile of FileSize bytes,
	// HostCopy cp of a file of that size on this host.
	Upload, Download, HostCopy *Transfer
	// Failed and BaselineFailed count the execs that did not complete;
	// Errors holds their errors.
	Failed, BaselineFailed int
	Errors                 []error
}

// Err returns nil when every exec completed, else an error that counts
// the failures and quotes the first.
func (r *ExecBenchResult) Err() error {
	if r.Failed == 0 && r.BaselineFailed == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d execs and %d containerd execs failed; the first: %w", r.Failed, r.N, r.BaselineFailed, r.Errors[0])
}

// ExecBench creates one long-running sandbox through api (which must speak
// HTTP/2, for WriteFile), times o.N execs of o.Command in it from the
// request to the first byte of output on the client, each beside
// containerd's own exec into the same task when o.Containerd is set, then
// uploads and downloads o.FileSize bytes and times cp of as many on this
// host. The sandbox is deleted before ExecBench returns, also when ctx
// ends (which stops the measuring).
func ExecBench(ctx context.Context, api fsbv1connect.FastPathServiceClient, o ExecBenchOptions) (r *ExecBenchResult, err error) {
	switch {
	case o.N < MinExecN:
		return nil, fmt.Errorf("%d execs: want at least %d", o.N, MinExecN)
	case len(o.Command) == 0:
		return nil, errors.New("no command: the bench times the first byte of its output")
	}
	o.Namespace = cmp.Or(o.Namespace, "default")
	o.Runtime = cmp.Or(o.Runtime, "runc")
	o.StepTimeout = cmp.Or(o.StepTimeout, DefaultStepTimeout)
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	name := "bench-exec-" + hex.EncodeToString(suffix[:])

	sb, err := createLongRunning(ctx, api, o, name)
	defer func() {
		// Also after an interrupt: the caller's ctx is over by then.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.StepTimeout)
		defer cancel()
		grace := int32(0)
		_, derr := api.DeleteSandbox(dctx, connect.NewRequest(&fsbv1.DeleteSandboxRequest{Name: name, Namespace: o.Namespace, GracePeriodSeconds: &grace}))
		if derr != nil && connect.CodeOf(derr) != connect.CodeNotFound {
			err = errors.Join(err, fmt.Errorf("delete sandbox %s in namespace %s: %w (delete it with fsb ctl delete)", name, o.Namespace, derr))
		}
	}()
	if err != nil {
		return nil, err
	}

	var base *containerdExec
	if o.Containerd != nil {
		if base, err = newContainerdExec(ctx, o.Containerd, sb, o.Command); err != nil {
			return nil, err
		}
	}
	// The first exec of a new sandbox may wait for its init to be
	// reachable: it is not timed.
	if err := warmUp(ctx, api, o, name); err != nil {
		return nil, err
	}

	r = &ExecBenchResult{Runtime: o.Runtime, N: o.N}
	fsb := func() {
		d, err := timeExec(ctx, api, o, name)
		if err != nil {
			r.Failed++
			r.Errors = append(r.Errors, err)
			return
		}
		r.Exec = append(r.Exec, d)
	}
	containerdOnce := func(i int) {
		if base == nil {
			return
		}
		d, err := base.run(ctx, fmt.Sprintf("%s-%d", name, i), o.StepTimeout)
		if err != nil {
			r.BaselineFailed++
			r.Errors = append(r.Errors, fmt.Errorf("containerd exec: %w", err))
			return
		}
		r.Baseline = append(r.Baseline, d)
	}
	for i := range o.N {
		if ctx.Err() != nil {
			return r, fmt.Errorf("interrupted after %d of %d execs", i, o.N)
		}
		// Alternate which goes first, so neither always finds the
		// caches the other warmed.
		if i%2 == 0 {
			fsb()
			containerdOnce(i)
		} else {
			containerdOnce(i)
			fsb()
		}
	}
	if o.FileSize > 0 {
		if err := r.transfers(ctx, api, o, name); err != nil {
			return r, err
		}
	}
	return r, nil
}

func createLongRunning(ctx context.Context, api fsbv1connect.FastPathServiceClient, o ExecBenchOptions, name string) (*fsbv1.Sandbox, error) {
	spec := &fsbv1.SandboxSpec{
		Image:   o.Image,
		Command: []string{"sleep", "2147483647"},
		Runtime: o.Runtime,
	}
	switch o.Mode {
	case "fast":
		spec.ConsistencyMode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST
	case "strong":
		spec.ConsistencyMode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG
	}
	cctx, cancel := context.WithTimeout(ctx, o.StepTimeout)
	defer cancel()
	resp, err := api.CreateSandbox(cctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{
		Name: name, Namespace: o.Namespace, Spec: spec, Labels: map[string]string{RunLabel: name},
	}))
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", name, err)
	}
	return resp.Msg.GetSandbox(), nil
}

func execRequest(o ExecBenchOptions, name string) *fsbv1.ExecRequest {
	return &fsbv1.ExecRequest{Name: name, Namespace: o.Namespace, Process: &fsbv1.ProcessSpec{Command: o.Command}}
}

// warmUp runs one exec, retrying while the sandbox's init is not
// reachable yet (Unavailable), for up to o.StepTimeout.
func warmUp(ctx context.Context, api fsbv1connect.FastPathServiceClient, o ExecBenchOptions, name string) error {
	deadline := time.Now().Add(o.StepTimeout)
	for {
		_, err := timeExec(ctx, api, o, name)
		if err == nil || connect.CodeOf(err) != connect.CodeUnavailable || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// timeExec runs one exec and returns the time from the request to the
// first byte of its output; the exec must then exit with status 0.
func timeExec(ctx context.Context, api fsbv1connect.FastPathServiceClient, o ExecBenchOptions, name string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, o.StepTimeout)
	defer cancel()
	start := time.Now()
	stream, err := api.Exec(ctx, connect.NewRequest(execRequest(o, name)))
	if err != nil {
		return 0, err
	}
	defer stream.Close()
	var first time.Duration
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		if first == 0 && (len(ev.GetStdout()) > 0 || len(ev.GetStderr()) > 0) {
			first = time.Since(start)
		}
		if exit := ev.GetExit(); exit != nil {
			switch {
			case exit.GetExitCode() != 0:
				return 0, fmt.Errorf("exec %q exited with status %d", o.Command, exit.GetExitCode())
			case first == 0:
				return 0, fmt.Errorf("exec %q exited without output: the bench needs a command that prints", o.Command)
			}
			return first, nil
		}
	}
	if err := stream.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("the exec's stream ended before the process exited")
}

// containerdExec is containerd's own exec into the sandbox's task: the
// same process spec as the task's (user, environment, capabilities), with
// the command's arguments, its stdout read from a FIFO.
type containerdExec struct {
	task containerd.Task
	spec specs.Process
}

func newContainerdExec(ctx context.Context, client *containerd.Client, sb *fsbv1.Sandbox, command []string) (*containerdExec, error) {
	id := sb.GetStatus().GetSandboxId()
	rev := strconv.FormatInt(sb.GetStatus().GetRevision(), 10)
	containers, err := client.Containers(ctx, fmt.Sprintf("labels.%q==%s", runtime.LabelID, id))
	if err != nil {
		return nil, fmt.Errorf("containerd: list the sandbox's containers: %w", err)
	}
	for _, c := range containers {
		labels, err := c.Labels(ctx)
		if err != nil || labels[runtime.LabelRevision] != rev {
			continue
		}
		task, err := c.Task(ctx, nil)
		if err != nil {
			return nil, fmt.Errorf("containerd: the sandbox's task: %w", err)
		}
		spec, err := task.Spec(ctx)
		if err != nil {
			return nil, fmt.Errorf("containerd: the sandbox's spec: %w", err)
		}
		p := *spec.Process
		p.Args = command
		p.Terminal = false
		// The link's token is init's alone.
		p.Env = slices.DeleteFunc(slices.Clone(p.Env), func(e string) bool { return strings.HasPrefix(e, initlink.TokenEnv+"=") })
		return &containerdExec{task: task, spec: p}, nil
	}
	return nil, fmt.Errorf("containerd: no container of sandbox %s (ID %s, revision %s) in this namespace: give the agent's --containerd-socket and --containerd-namespace, on the agent's host",
		sb.GetName(), id, rev)
}

// firstByte records when the first byte arrived and discards the rest.
type firstByte struct {
	seen chan time.Time
	got  bool
}

func (f *firstByte) Write(p []byte) (int, error) {
	if !f.got && len(p) > 0 {
		f.got = true
		f.seen <- time.Now()
	}
	return len(p), nil
}

// run execs the command in the task as execID and returns the time from
// the Exec call to the first byte read from its stdout.
func (b *containerdExec) run(ctx context.Context, execID string, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pspec := b.spec
	out := &firstByte{seen: make(chan time.Time, 1)}
	start := time.Now()
	p, err := b.task.Exec(ctx, execID, &pspec, cio.NewCreator(cio.WithStreams(nil, out, io.Discard)))
	if err != nil {
		return 0, err
	}
	defer func() { _, _ = p.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill) }()
	exited, err := p.Wait(ctx)
	if err != nil {
		return 0, err
	}
	if err := p.Start(ctx); err != nil {
		return 0, err
	}
	var d time.Duration
	var st containerd.ExitStatus
	select {
	case seen := <-out.seen:
		d = seen.Sub(start)
		select {
		case st = <-exited:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	case st = <-exited:
		// The exit may be seen before the copy of the output has
		// written its first byte: the byte's time is what counts.
		p.IO().Wait()
		select {
		case seen := <-out.seen:
			d = seen.Sub(start)
		default:
			return 0, fmt.Errorf("exited (status %d) without output", st.ExitCode())
		}
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if st.ExitCode() != 0 {
		return 0, fmt.Errorf("exited with status %d", st.ExitCode())
	}
	// The copy of its output ends with the FIFO's.
	p.IO().Wait()
	return d, nil
}

// pattern is the bytes uploaded, repeated: incompressible enough for any
// transport, cheap to make.
func pattern() []byte {
	b := make([]byte, 1<<20)
	_, _ = rand.Read(b)
	return b
}

// transfers times WriteFile and ReadFile of o.FileSize bytes in the
// sandbox, and cp of as many on this host.
func (r *ExecBenchResult) transfers(ctx context.Context, api fsbv1connect.FastPathServiceClient, o ExecBenchOptions, name string) error {
	const remote = "/tmp/fsb-bench-file"
	block := pattern()
	ctx, cancel := context.WithTimeout(ctx, 3*o.StepTimeout)
	defer cancel()

	start := time.Now()
	up := api.WriteFile(ctx)
	const chunk = 256 << 10
	sent := int64(0)
	for sent < o.FileSize {
		n := min(int64(chunk), o.FileSize-sent)
		off := sent % int64(len(block))
		n = min(n, int64(len(block))-off)
		msg := &fsbv1.WriteFileRequest{Data: block[off : off+n]}
		if sent == 0 {
			msg.Name, msg.Namespace, msg.Path = name, o.Namespace, remote
		}
		if err := up.Send(msg); err != nil {
			if !errors.Is(err, io.EOF) {
				return fmt.Errorf("upload %d bytes: %w", o.FileSize, err)
			}
			break // the server ended the call: CloseAndReceive says why
		}
		sent += n
	}
	if _, err := up.CloseAndReceive(); err != nil {
		return fmt.Errorf("upload %d bytes: %w", o.FileSize, err)
	}
	r.Upload = &Transfer{Bytes: sent, Duration: time.Since(start)}

	start = time.Now()
	down, err := api.ReadFile(ctx, connect.NewRequest(&fsbv1.ReadFileRequest{Name: name, Namespace: o.Namespace, Path: remote}))
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	got := int64(0)
	for down.Receive() {
		got += int64(len(down.Msg().GetData()))
	}
	if err := down.Err(); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	down.Close()
	if got != o.FileSize {
		return fmt.Errorf("downloaded %d bytes, uploaded %d", got, o.FileSize)
	}
	r.Download = &Transfer{Bytes: got, Duration: time.Since(start)}

	d, err := hostCopy(ctx, block, o.FileSize)
	if err != nil {
		return fmt.Errorf("cp on this host: %w", err)
	}
	r.HostCopy = &Transfer{Bytes: o.FileSize, Duration: d}
	return nil
}

// hostCopy writes a file of size bytes in a temporary directory and times
// cp of it beside it.
func hostCopy(ctx context.Context, block []byte, size int64) (time.Duration, error) {
	dir, err := os.MkdirTemp("", "fsb-bench-cp-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "src")
	f, err := os.Create(src)
	if err != nil {
		return 0, err
	}
	for left := size; left > 0; left -= int64(len(block)) {
		if _, err := f.Write(block[:min(left, int64(len(block)))]); err != nil {
			f.Close()
			return 0, err
		}
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	start := time.Now()
	if out, err := exec.CommandContext(ctx, "cp", src, filepath.Join(dir, "dst")).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("%w: %s", err, out)
	}
	return time.Since(start), nil
}

// ExecReport is an ExecBenchResult as `fsb ctl bench --exec -o json`
// prints it. The baseline's fields are null without one, the files'
// without transfers.
type ExecReport struct {
	Runtime      string       `json:"runtime"`
	N            int          `json:"n"`
	Exec         Percentiles  `json:"exec_ms"`
	BaselineExec *Percentiles `json:"baseline_exec_ms"`
	// RatioP50 is the p50 of Exec over that of BaselineExec.
	RatioP50     *float64 `json:"ratio_p50"`
	FileBytes    int64    `json:"file_bytes"`
	UploadMiBps  *float64 `json:"upload_mib_s"`
	DownloadMiBs *float64 `json:"download_mib_s"`
	HostCpMiBps  *float64 `json:"host_cp_mib_s"`
	// UploadRatio and DownloadRatio are their rates over cp's.
	UploadRatio   *float64 `json:"upload_ratio"`
	DownloadRatio *float64 `json:"download_ratio"`
}

func round2(v float64) *float64 {
	v = math.Round(v*100) / 100
	return &v
}

// round3 keeps three significant digits: a ratio to cp may be far below
// 0.01.
func round3(v float64) *float64 {
	if v == 0 {
		return &v
	}
	scale := math.Pow(10, 2-math.Floor(math.Log10(math.Abs(v))))
	v = math.Round(v*scale) / scale
	return &v
}

// Report summarizes r.
func (r *ExecBenchResult) Report() ExecReport {
	rep := ExecReport{Runtime: r.Runtime, N: r.N, Exec: percentiles(r.Exec)}
	if len(r.Baseline) > 0 {
		b := percentiles(r.Baseline)
		rep.BaselineExec = &b
		if b.P50 > 0 && len(r.Exec) > 0 {
			rep.RatioP50 = round2(rep.Exec.P50 / b.P50)
		}
	}
	if r.Upload != nil && r.Download != nil && r.HostCopy != nil {
		rep.FileBytes = r.Upload.Bytes
		rep.UploadMiBps, rep.DownloadMiBs, rep.HostCpMiBps = round2(r.Upload.MiBps()), round2(r.Download.MiBps()), round2(r.HostCopy.MiBps())
		if cp := r.HostCopy.MiBps(); cp > 0 {
			rep.UploadRatio, rep.DownloadRatio = round3(r.Upload.MiBps()/cp), round3(r.Download.MiBps()/cp)
		}
	}
	return rep
}

// WriteJSON writes r's Report as one JSON object.
func (r *ExecBenchResult) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r.Report())
}

// WriteTable writes r for people.
func (r *ExecBenchResult) WriteTable(w io.Writer) error {
	rep := r.Report()
	fmt.Fprintf(w, "runtime %s, %d execs\n\n", rep.Runtime, rep.N)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "(ms)\t%8s\t%8s\t%8s\t%8s\n", "p50", "p90", "p99", "max")
	row := func(name string, p Percentiles) {
		fmt.Fprintf(tw, "%s\t%8.2f\t%8.2f\t%8.2f\t%8.2f\n", name, p.P50, p.P90, p.P99, p.Max)
	}
	row("exec -> first output", rep.Exec)
	if rep.BaselineExec != nil {
		row("containerd exec -> first output", *rep.BaselineExec)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if rep.RatioP50 != nil {
		fmt.Fprintf(w, "\nfsb / containerd, exec -> first output p50: %.2f\n", *rep.RatioP50)
	}
	if rep.UploadMiBps != nil {
		fmt.Fprintf(w, "\nfiles of %d MiB: upload %.1f MiB/s (%.3g of cp), download %.1f MiB/s (%.3g of cp), cp on this host %.1f MiB/s\n",
			rep.FileBytes>>20, *rep.UploadMiBps, deref(rep.UploadRatio), *rep.DownloadMiBs, deref(rep.DownloadRatio), *rep.HostCpMiBps)
	}
	return nil
}

func deref(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}
