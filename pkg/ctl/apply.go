package ctl

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// Apply creates or replaces the objects of the YAML documents in file ("-":
// Config.In, else standard input): Sandboxes and SandboxPools of
// apiVersion sandbox.fast.io/v1alpha1.
//
// A SandboxPool is created or replaced whole (ApplyPool: no merge). A
// Sandbox is created in its metadata.namespace (else the client's); one
// that exists gets what `fsb ctl update` can change: its labels (replaced
// as a whole), and spec.failurePolicy, spec.expireTime and
// spec.recoveryTimeoutSeconds when the document sets them. Its other spec
// fields stay as the running sandbox has them (delete it and apply again to
// change them).
//
// Each document gets a line ("sandbox/web created", "sandboxpool/gpu
// configured", "... unchanged"); a document that fails is reported by its
// number and object, the others are applied all the same, and the error
// names every failure.
func (c *Client) Apply(ctx context.Context, file string) error {
	if file == "" {
		return usagef("apply needs a file: fsb ctl apply -f FILE (-f - reads standard input)")
	}
	var r io.Reader
	if file == "-" {
		r = c.in
	} else {
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		defer f.Close()
		r = f
	}
	docs, err := splitDocuments(r)
	if err != nil {
		return fmt.Errorf("apply %s: %w", file, err)
	}
	if len(docs) == 0 {
		return fmt.Errorf("apply %s: no objects in it", file)
	}
	var failed []string
	for i, doc := range docs {
		what, err := c.applyOne(ctx, doc)
		if err != nil {
			msg := fmt.Sprintf("document %d", i+1)
			if what != "" {
				msg += " (" + what + ")"
			}
			fmt.Fprintf(c.err, "%s: %v\n", msg, err)
			failed = append(failed, msg)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("apply %s: %d of %d objects failed: %s", file, len(failed), len(docs), strings.Join(failed, ", "))
	}
	return nil
}

// splitDocuments returns the non-empty YAML documents of r.
func splitDocuments(r io.Reader) ([][]byte, error) {
	yr := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var docs [][]byte
	for {
		doc, err := yr.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		var v any
		if err := yaml.Unmarshal(doc, &v); err != nil {
			return nil, fmt.Errorf("document %d: not YAML: %v", len(docs)+1, err)
		}
		if v == nil {
			continue // only comments or nothing
		}
		docs = append(docs, bytes.Clone(doc))
	}
}

// applyOne applies one document; what names its object ("sandbox/web") as
// soon as that is known.
func (c *Client) applyOne(ctx context.Context, doc []byte) (what string, err error) {
	var tm struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return "", fmt.Errorf("not an object: %v", err)
	}
	if tm.APIVersion != v1alpha1.GroupVersion.String() {
		return "", fmt.Errorf("apiVersion %q: want %s", tm.APIVersion, v1alpha1.GroupVersion)
	}
	switch tm.Kind {
	case "Sandbox":
		what = "sandbox/" + tm.Metadata.Name
		return what, c.applySandbox(ctx, doc)
	case "SandboxPool":
		what = "sandboxpool/" + tm.Metadata.Name
		return what, c.applyPool(ctx, doc)
	}
	return "", fmt.Errorf("kind %q: want Sandbox or SandboxPool", tm.Kind)
}

func (c *Client) applyPool(ctx context.Context, doc []byte) error {
	var p v1alpha1.SandboxPool
	if err := yaml.UnmarshalStrict(doc, &p); err != nil {
		return fmt.Errorf("not a SandboxPool: %v", err)
	}
	if p.Name == "" {
		return errors.New("metadata.name: required")
	}
	msg := &fsbv1.SandboxPool{Name: p.Name, Labels: p.Labels, Spec: v1alpha1.PoolSpecToProto(p.Spec)}
	resp, err := c.api.ApplyPool(ctx, connect.NewRequest(&fsbv1.ApplyPoolRequest{Pool: msg}))
	if err != nil {
		return c.describe(err, target{})
	}
	if ns := resp.Msg.GetPool().GetNamespace(); p.Namespace != "" && p.Namespace != ns {
		fmt.Fprintf(c.err, "sandboxpool/%s: metadata.namespace %s ignored: pools live in the controller's pool namespace, %s\n", p.Name, p.Namespace, ns)
	}
	switch {
	case resp.Msg.GetCreated():
		fmt.Fprintf(c.out, "sandboxpool/%s created\n", p.Name)
	case resp.Msg.GetChanged():
		fmt.Fprintf(c.out, "sandboxpool/%s configured\n", p.Name)
	default:
		fmt.Fprintf(c.out, "sandboxpool/%s unchanged\n", p.Name)
	}
	return nil
}

func (c *Client) applySandbox(ctx context.Context, doc []byte) error {
	var sb v1alpha1.Sandbox
	if err := yaml.UnmarshalStrict(doc, &sb); err != nil {
		return fmt.Errorf("not a Sandbox: %v", err)
	}
	ns := sb.Namespace
	if ns == "" {
		ns = c.namespace
	}
	sb.Namespace = ns
	if err := v1alpha1.ValidateSandbox(&sb); err != nil {
		return err
	}
	t := target{name: sb.Name, namespace: ns}
	spec := v1alpha1.SpecToProto(sb.Spec)
	got, err := c.api.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: sb.Name, Namespace: ns}))
	if connect.CodeOf(err) == connect.CodeNotFound {
		_, err := c.api.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{
			Name: sb.Name, Namespace: ns, Labels: sb.Labels, Spec: spec}))
		if err != nil {
			return c.describe(err, target{name: sb.Name, namespace: ns, create: true})
		}
		fmt.Fprintf(c.out, "sandbox/%s created\n", sb.Name)
		return nil
	}
	if err != nil {
		return c.describe(err, t)
	}
	cur := got.Msg.GetSandbox()
	req := &fsbv1.UpdateSandboxRequest{Name: sb.Name, Namespace: ns}
	changed := false
	if !maps.Equal(cur.GetLabels(), sb.Labels) {
		if len(sb.Labels) == 0 {
			// As fsb ctl update: on the wire no labels means "unchanged".
			return fmt.Errorf("cannot remove every label of sandbox %s: the API keeps the labels when the new set is empty; keep at least one", sb.Name)
		}
		req.Labels, changed = sb.Labels, true
	}
	cs := cur.GetSpec()
	if p := spec.GetFailurePolicy(); p != fsbv1.FailurePolicy_FAILURE_POLICY_UNSPECIFIED && p != cs.GetFailurePolicy() {
		req.FailurePolicy, changed = p, true
	}
	if e := spec.GetExpireTime(); e != nil && !e.AsTime().Equal(cs.GetExpireTime().AsTime()) {
		req.ExpireTime, changed = timestamppb.New(e.AsTime()), true
	}
	if s := spec.GetRecoveryTimeoutSeconds(); s != 0 && s != cs.GetRecoveryTimeoutSeconds() {
		req.RecoveryTimeoutSeconds, changed = &s, true
	}
	if !changed {
		fmt.Fprintf(c.out, "sandbox/%s unchanged\n", sb.Name)
		return nil
	}
	if _, err := c.api.UpdateSandbox(ctx, connect.NewRequest(req)); err != nil {
		return c.describe(err, t)
	}
	fmt.Fprintf(c.out, "sandbox/%s configured\n", sb.Name)
	return nil
}
