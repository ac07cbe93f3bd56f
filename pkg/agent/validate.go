package agent

import (
	"fmt"
	"regexp"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// sandboxIDPattern keeps container IDs, labels and file names simple.
var sandboxIDPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$`)

// validateCreate checks a create request once, at the edge, and says what
// to fix. The sandbox's name, labels and spec are held to v1alpha1's rules,
// the ones the fast path and the CRD's schema hold too; only the sandbox ID
// and revision, which the controller makes, are the agent's own.
func validateCreate(req *fsbv1.AgentServiceCreateSandboxRequest) error {
	if err := validateID(req.GetSandboxId(), req.GetRevision()); err != nil {
		return err
	}
	if req.GetRevision() < 1 {
		return fmt.Errorf("revision %d: want 1 or more", req.GetRevision())
	}
	if err := v1alpha1.ValidateObjectName(req.GetNamespace(), req.GetName()); err != nil {
		return err
	}
	if err := v1alpha1.ValidateLabels(req.GetLabels()); err != nil {
		return err
	}
	return v1alpha1.ValidateSpec(req.GetSpec())
}

func validateID(id string, revision int64) error {
	if !sandboxIDPattern.MatchString(id) {
		return fmt.Errorf("sandbox_id %s: want 1-52 characters of a-z, 0-9 and '-', starting and ending with a letter or digit", briefID(id))
	}
	if revision < 0 {
		return fmt.Errorf("revision %d: want 0 (every revision) or more", revision)
	}
	return nil
}

// briefID quotes an ID for a message, cut short: a hostile one may be
// megabytes long.
func briefID(id string) string {
	if len(id) > 64 {
		return fmt.Sprintf("%q… (%d bytes)", id[:64], len(id))
	}
	return fmt.Sprintf("%q", id)
}
