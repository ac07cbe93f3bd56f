package ctl

import (
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/util/duration"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// parseDuration reads a flag's DURATION, such as "90s", "10m" or "1h30m".
func parseDuration(flag, s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, usagef("%s %q: want a duration such as 30s, 10m or 1h30m", flag, s)
	}
	return d, nil
}

// expireAt reads --expire-in: the sandbox expires that long after now. Zero
// and negative durations are refused rather than read as "never" or "at
// once": --no-expire is the one way to remove an expiry.
func expireAt(s string, now time.Time) (*timestamppb.Timestamp, error) {
	d, err := parseDuration("--expire-in", s)
	if err != nil {
		return nil, err
	}
	if d <= 0 {
		return nil, usagef("--expire-in %s: want a positive duration such as 10m (to remove an expiry: --no-expire)", s)
	}
	// Whole seconds: the object keeps times in RFC 3339 without fractions.
	return timestamppb.New(now.Add(d).Truncate(time.Second)), nil
}

// recoverySeconds reads --recovery-timeout: how long AutoRecreate keeps
// trying without a running revision, in whole seconds, at least one.
func recoverySeconds(s string) (int32, error) {
	d, err := parseDuration("--recovery-timeout", s)
	if err != nil {
		return 0, err
	}
	switch {
	case d < time.Second:
		return 0, usagef("--recovery-timeout %s: want 1s or more", s)
	case d%time.Second != 0:
		return 0, usagef("--recovery-timeout %s: want whole seconds, such as 90s or 5m", s)
	case d/time.Second > math.MaxInt32:
		return 0, usagef("--recovery-timeout %s: want at most %ds", s, math.MaxInt32)
	}
	return int32(d / time.Second), nil
}

// expiryString says when a sandbox expires, absolute and relative to now:
// "2030-01-02T03:04:05Z (in 9m58s)", "... (2m ago)", or "never".
func expiryString(t *timestamppb.Timestamp, now time.Time) string {
	if t == nil {
		return "never"
	}
	at := t.AsTime()
	abs := at.UTC().Format(time.RFC3339)
	if left := at.Sub(now); left > 0 {
		return fmt.Sprintf("%s (in %s)", abs, duration.HumanDuration(left))
	}
	return fmt.Sprintf("%s (%s ago)", abs, duration.HumanDuration(now.Sub(at)))
}

// timeLeft is the EXPIRES column: the time left, "passed" once it has
// come, "-" without an expiry.
func timeLeft(t *timestamppb.Timestamp, now time.Time) string {
	if t == nil {
		return "-"
	}
	left := t.AsTime().Sub(now)
	if left <= 0 {
		return "passed"
	}
	return duration.HumanDuration(left)
}

// recoveryString spells a recovery timeout; 0 is the controller's default.
func recoveryString(seconds int32) string {
	if seconds == 0 {
		return "the controller's default"
	}
	return (time.Duration(seconds) * time.Second).String()
}

// failurePolicy parses a --failure-policy value; empty means unset.
func failurePolicy(s string) (fsbv1.FailurePolicy, error) {
	switch strings.ToLower(strings.ReplaceAll(s, "-", "")) {
	case "":
		return fsbv1.FailurePolicy_FAILURE_POLICY_UNSPECIFIED, nil
	case "manual":
		return fsbv1.FailurePolicy_FAILURE_POLICY_MANUAL, nil
	case "autorecreate":
		return fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE, nil
	}
	return 0, usagef("--failure-policy %q: want manual or auto-recreate", s)
}

// policyName names a failure policy as the Sandbox object does; unset is
// Manual, the controller's default.
func policyName(p fsbv1.FailurePolicy) string {
	if p == fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE {
		return "AutoRecreate"
	}
	return "Manual"
}
