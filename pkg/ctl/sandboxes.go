package ctl

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// Output formats. List, get and update take all four; agents takes table
// and json.
const (
	OutputTable = "table"
	// OutputWide is the table with more columns: sandbox ID, node, runtime,
	// revision, time to expiry, exit code, labels and message.
	OutputWide = "wide"
	OutputJSON = "json"
	// OutputYAML is the JSON form's shape, spelt in YAML.
	OutputYAML = "yaml"
)

// ListOptions are the arguments of `fsb ctl list`.
type ListOptions struct {
	// Selector is a Kubernetes label selector, such as "app=demo,tier!=db".
	Selector string
	// AllNamespaces lists every namespace instead of the client's one.
	AllNamespaces bool
	// Output is OutputTable (the default), OutputWide, OutputJSON or
	// OutputYAML.
	Output string
}

// List prints the sandboxes of the namespace, or of every namespace.
func (c *Client) List(ctx context.Context, o ListOptions) error {
	if err := checkSandboxOutput(o.Output); err != nil {
		return err
	}
	ns := c.namespace
	if o.AllNamespaces {
		ns = ""
	}
	resp, err := c.api.ListSandboxes(ctx, connect.NewRequest(&fsbv1.ListSandboxesRequest{
		Namespace:     ns,
		LabelSelector: o.Selector,
	}))
	if err != nil {
		return c.describe(err, target{})
	}
	sbs := slices.Clone(resp.Msg.GetSandboxes())
	slices.SortFunc(sbs, func(a, b *fsbv1.Sandbox) int {
		return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	})
	if o.Output == OutputJSON || o.Output == OutputYAML {
		items := make([]sandboxJSON, 0, len(sbs))
		for _, sb := range sbs {
			items = append(items, toJSON(sb))
		}
		return c.writeDocument(o.Output, struct {
			Items []sandboxJSON `json:"items"`
		}{items})
	}
	if len(sbs) == 0 {
		if o.AllNamespaces {
			fmt.Fprintln(c.err, "No sandboxes found.")
		} else {
			fmt.Fprintf(c.err, "No sandboxes found in namespace %s.\n", ns)
		}
		return nil
	}
	return c.writeTable(sbs, o.AllNamespaces, o.Output == OutputWide)
}

// Get prints one sandbox.
func (c *Client) Get(ctx context.Context, name, output string) error {
	if name == "" {
		return usagef("get needs a sandbox name: fsb ctl get NAME")
	}
	if err := checkSandboxOutput(output); err != nil {
		return err
	}
	resp, err := c.api.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: name, Namespace: c.namespace}))
	if err != nil {
		return c.describe(err, target{name: name, namespace: c.namespace})
	}
	return c.writeSandbox(resp.Msg.GetSandbox(), output)
}

// writeSandbox prints one sandbox in output's format: as a document, or as
// its row of the list's table followed by its lifecycle in detail.
func (c *Client) writeSandbox(sb *fsbv1.Sandbox, output string) error {
	switch output {
	case OutputJSON, OutputYAML:
		return c.writeDocument(output, toJSON(sb))
	}
	if err := c.writeTable([]*fsbv1.Sandbox{sb}, false, output == OutputWide); err != nil {
		return err
	}
	return c.writeDetails(sb, time.Now())
}

// writeDetails prints what one table row cannot hold: the revision, the
// failure policy, the expiry, the exit code, the message (for a
// Terminating sandbox, what its delete waits for) and every condition.
func (c *Client) writeDetails(sb *fsbv1.Sandbox, now time.Time) error {
	v := toJSON(sb)
	spec := sb.GetSpec()
	policy := policyName(spec.GetFailurePolicy())
	if spec.GetFailurePolicy() == fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE {
		policy += ", recovery timeout " + recoveryString(spec.GetRecoveryTimeoutSeconds())
	}
	exit := "<none>"
	if v.ExitCode != nil {
		exit = strconv.Itoa(int(*v.ExitCode))
	}
	fmt.Fprintln(c.out)
	fmt.Fprintf(c.out, "Revision:        %d\n", v.Revision)
	fmt.Fprintf(c.out, "Started:         %s\n", startedString(v.Warm))
	fmt.Fprintf(c.out, "Failure policy:  %s\n", policy)
	fmt.Fprintf(c.out, "Expires:         %s\n", expiryString(spec.GetExpireTime(), now))
	fmt.Fprintf(c.out, "Exit code:       %s\n", exit)
	fmt.Fprintf(c.out, "Message:         %s\n", orNone(v.Message))
	conds := sb.GetStatus().GetConditions()
	if len(conds) == 0 {
		fmt.Fprintln(c.out, "Conditions:      <none>")
		return nil
	}
	fmt.Fprintln(c.out, "Conditions:")
	tw := tabwriter.NewWriter(c.out, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "  TYPE\tSTATUS\tREASON\tAGE\tMESSAGE")
	for _, cond := range conds {
		age := "<unknown>"
		if t := cond.GetLastTransitionTime(); t != nil {
			age = duration.HumanDuration(now.Sub(t.AsTime()))
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", cond.GetType(), orNone(cond.GetStatus()), orNone(cond.GetReason()), age, orNone(cond.GetMessage()))
	}
	return tw.Flush()
}

// checkSandboxOutput checks the -o of the commands that print sandboxes.
func checkSandboxOutput(o string) error {
	switch o {
	case "", OutputTable, OutputWide, OutputJSON, OutputYAML:
		return nil
	}
	return usagef("-o %q: want table, wide, json or yaml", o)
}

// writeTable prints sandboxes in the columns `list` and `get` share, and
// with wide in the columns that do not fit a narrow terminal too. MESSAGE
// comes last, since it may hold spaces.
func (c *Client) writeTable(sbs []*fsbv1.Sandbox, withNamespace, wide bool) error {
	tw := tabwriter.NewWriter(c.out, 0, 8, 3, ' ', 0)
	if withNamespace {
		fmt.Fprint(tw, "NAMESPACE\t")
	}
	fmt.Fprint(tw, "NAME\tPHASE\tAGENT\tENDPOINTS\tIMAGE\tAGE")
	if wide {
		fmt.Fprint(tw, "\tSANDBOX-ID\tNODE\tRUNTIME\tREVISION\tEXPIRES\tEXIT\tLABELS\tMESSAGE")
	}
	fmt.Fprintln(tw)
	now := time.Now()
	for _, sb := range sbs {
		st := sb.GetStatus()
		if withNamespace {
			fmt.Fprintf(tw, "%s\t", sb.GetNamespace())
		}
		age := "<unknown>"
		if sb.GetCreateTime() != nil {
			age = duration.HumanDuration(now.Sub(sb.GetCreateTime().AsTime()))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s",
			sb.GetName(), phase(st.GetPhase()), orNone(st.GetAssignedPod()),
			orNone(strings.Join(st.GetEndpoints(), ",")), sb.GetSpec().GetImage(), age)
		if wide {
			v := toJSON(sb)
			exit := "<none>"
			if v.ExitCode != nil {
				exit = strconv.Itoa(int(*v.ExitCode))
			}
			fmt.Fprintf(tw, "\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s",
				orNone(v.SandboxID), orNone(v.Node), orDefault(sb.GetSpec().GetRuntime()), v.Revision,
				timeLeft(sb.GetSpec().GetExpireTime(), now), exit, orNone(labelString(v.Labels)), orNone(v.Message))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// labelString spells labels as a selector would, sorted: "app=web,tier=a".
func labelString(labels map[string]string) string {
	kvs := make([]string, 0, len(labels))
	for k, v := range labels {
		kvs = append(kvs, k+"="+v)
	}
	slices.Sort(kvs)
	return strings.Join(kvs, ",")
}

// sandboxJSON is the shape of a sandbox in `get -o json` and, inside
// {"items": [...]}, in `list -o json`. Scripts rely on it: every key is
// always present, keys are lowerCamel, and fields are only ever added.
type sandboxJSON struct {
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	SandboxID string   `json:"sandboxID"`
	Phase     string   `json:"phase"`
	Agent     string   `json:"agent"`
	Node      string   `json:"node"`
	Endpoints []string `json:"endpoints"`
	Image     string   `json:"image"`
	Revision  int64    `json:"revision"`
	// Warm says the revision running was claimed from a warm pool.
	Warm bool `json:"warm"`
	// ExitCode is null until the sandbox's main process has ended.
	ExitCode *int32 `json:"exitCode"`
	Message  string `json:"message"`
	// FailurePolicy is "Manual" or "AutoRecreate", as the object spells it.
	FailurePolicy string `json:"failurePolicy"`
	// ExpireTime is null when the sandbox never expires.
	ExpireTime *time.Time        `json:"expireTime"`
	Conditions []conditionJSON   `json:"conditions"`
	Labels     map[string]string `json:"labels"`
	CreateTime *time.Time        `json:"createTime"`
	// Spec is the full spec as the API has it (protobuf JSON).
	Spec json.RawMessage `json:"spec"`
}

// conditionJSON is one condition in sandboxJSON, keyed as Kubernetes keys
// conditions.
type conditionJSON struct {
	Type               string     `json:"type"`
	Status             string     `json:"status"`
	Reason             string     `json:"reason"`
	Message            string     `json:"message"`
	LastTransitionTime *time.Time `json:"lastTransitionTime"`
}

func toJSON(sb *fsbv1.Sandbox) sandboxJSON {
	st := sb.GetStatus()
	v := sandboxJSON{
		Name:      sb.GetName(),
		Namespace: sb.GetNamespace(),
		SandboxID: st.GetSandboxId(),
		Phase:     phase(st.GetPhase()),
		Agent:     st.GetAssignedPod(),
		Node:      st.GetNodeName(),
		Endpoints: st.GetEndpoints(),
		Image:     sb.GetSpec().GetImage(),
		Revision:  st.GetRevision(),
		Warm:      st.GetWarm(),
		Message:   st.GetMessage(),
		Labels:    sb.GetLabels(),
		Spec:      json.RawMessage("{}"),

		FailurePolicy: policyName(sb.GetSpec().GetFailurePolicy()),
		Conditions:    []conditionJSON{},
	}
	if at := sb.GetSpec().GetExpireTime(); at != nil {
		t := at.AsTime().UTC()
		v.ExpireTime = &t
	}
	for _, c := range st.GetConditions() {
		cj := conditionJSON{Type: c.GetType(), Status: c.GetStatus(), Reason: c.GetReason(), Message: c.GetMessage()}
		if c.GetLastTransitionTime() != nil {
			t := c.GetLastTransitionTime().AsTime().UTC()
			cj.LastTransitionTime = &t
		}
		v.Conditions = append(v.Conditions, cj)
	}
	if v.Endpoints == nil {
		v.Endpoints = []string{}
	}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	switch st.GetPhase() {
	case fsbv1.Phase_PHASE_SUCCEEDED, fsbv1.Phase_PHASE_FAILED, fsbv1.Phase_PHASE_EXPIRED:
		code := st.GetExitCode()
		v.ExitCode = &code
	default:
		if code := st.GetExitCode(); code != 0 {
			v.ExitCode = &code
		}
	}
	if sb.GetCreateTime() != nil {
		t := sb.GetCreateTime().AsTime().UTC()
		v.CreateTime = &t
	}
	if sb.GetSpec() != nil {
		if b, err := protojson.Marshal(sb.GetSpec()); err == nil {
			v.Spec = b
		}
	}
	return v
}

func (c *Client) writeJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = c.out.Write(append(b, '\n'))
	return err
}

// writeDocument prints v as JSON or, for OutputYAML, as the YAML spelling
// of that same JSON, so that both have one shape and one set of keys.
func (c *Client) writeDocument(output string, v any) error {
	if output != OutputYAML {
		return c.writeJSON(v)
	}
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	_, err = c.out.Write(b)
	return err
}

// phase names a phase as the Sandbox object does: "Running", "Succeeded".
func phase(p fsbv1.Phase) string {
	switch p {
	case fsbv1.Phase_PHASE_PENDING:
		return "Pending"
	case fsbv1.Phase_PHASE_BOUND:
		return "Bound"
	case fsbv1.Phase_PHASE_RUNNING:
		return "Running"
	case fsbv1.Phase_PHASE_SUCCEEDED:
		return "Succeeded"
	case fsbv1.Phase_PHASE_FAILED:
		return "Failed"
	case fsbv1.Phase_PHASE_TERMINATING:
		return "Terminating"
	case fsbv1.Phase_PHASE_EXPIRED:
		return "Expired"
	case fsbv1.Phase_PHASE_LOST:
		return "Lost"
	}
	return "Unknown"
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func orDefault(s string) string {
	if s == "" {
		return "<default>"
	}
	return s
}

// startedString says how the running revision started: claimed from a warm
// pool, or cold.
func startedString(warm bool) string {
	if warm {
		return "warm (claimed from a pool's warm sandboxes)"
	}
	return "cold"
}
