package ctl

import (
	"context"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// usageJSON is `fsb ctl top -o json`: every field always present, bytes
// and nanoseconds as numbers, so that jq reads them without a schema.
type usageJSON struct {
	Name            string    `json:"name"`
	Namespace       string    `json:"namespace"`
	Revision        int64     `json:"revision"`
	Time            time.Time `json:"time"`
	CPUPercent      float64   `json:"cpuPercent"`
	CPUCount        int32     `json:"cpuCount"`
	CPUWindowMillis int32     `json:"cpuWindowMillis"`
	CPUUsedNanos    uint64    `json:"cpuUsedNanos"`
	MemoryUsed      uint64    `json:"memoryUsedBytes"`
	// MemoryLimit is 0 for a sandbox without a limit.
	MemoryLimit uint64 `json:"memoryLimitBytes"`
	MemoryCache uint64 `json:"memoryCacheBytes"`
	NodeMemory  uint64 `json:"nodeMemoryBytes"`
	// DiskUsed is null when the agent's snapshotter could not say.
	DiskUsed *uint64 `json:"diskUsedBytes"`
}

// Top prints what sandbox name uses now: the share of its cores it used
// over the agent's short CPU window, its memory (used, limit, page cache)
// and the bytes it wrote to its root file system. With OutputJSON it
// prints usageJSON.
func (c *Client) Top(ctx context.Context, name, output string) error {
	if name == "" {
		return usagef("top needs a sandbox name: fsb ctl top NAME")
	}
	if output != "" && output != OutputTable && output != OutputJSON {
		return usagef("-o %q: want table or json", output)
	}
	resp, err := c.api.GetSandboxUsage(ctx, connect.NewRequest(&fsbv1.GetSandboxUsageRequest{Name: name, Namespace: c.namespace}))
	if err != nil {
		return c.describe(err, target{name: name, namespace: c.namespace})
	}
	u := resp.Msg.GetUsage()
	if output == OutputJSON {
		return c.writeJSON(usageJSON{
			Name: name, Namespace: c.namespace, Revision: u.GetRevision(), Time: u.GetTime().AsTime(),
			CPUPercent: u.GetCpuPercent(), CPUCount: u.GetCpuCount(), CPUWindowMillis: u.GetCpuWindowMillis(),
			CPUUsedNanos: u.GetCpuUsedNanos(), MemoryUsed: u.GetMemoryUsedBytes(), MemoryLimit: u.GetMemoryLimitBytes(),
			MemoryCache: u.GetMemoryCacheBytes(), NodeMemory: u.GetNodeMemoryBytes(), DiskUsed: u.DiskUsedBytes,
		})
	}
	limit := "none"
	if l := u.GetMemoryLimitBytes(); l > 0 {
		limit = bytesString(l)
	}
	disk := "<unknown>"
	if u.DiskUsedBytes != nil {
		disk = bytesString(u.GetDiskUsedBytes())
	}
	tw := tabwriter.NewWriter(c.out, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCPU\tCORES\tMEMORY\tLIMIT\tCACHE\tDISK")
	fmt.Fprintf(tw, "%s\t%s%%\t%d\t%s\t%s\t%s\t%s\n", name, strconv.FormatFloat(u.GetCpuPercent(), 'f', 1, 64), u.GetCpuCount(),
		bytesString(u.GetMemoryUsedBytes()), limit, bytesString(u.GetMemoryCacheBytes()), disk)
	return tw.Flush()
}

// bytesString spells a size in binary units as Kubernetes quantities do
// (Ki, Mi, Gi), with one decimal below 10 of a unit: "512", "1.4Mi", "256Mi".
func bytesString(n uint64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatUint(n, 10)
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	prec := 0
	if v < 10 && v != float64(int64(v)) {
		prec = 1
	}
	return strconv.FormatFloat(v, 'f', prec, 64) + string(units[i]) + "i"
}
