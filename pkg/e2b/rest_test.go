package e2b

import (
	"maps"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

func TestMetadataLabelsRoundTrip(t *testing.T) {
	md := map[string]string{
		"user":        "alice",
		"empty":       "",
		"with space":  "hello world",
		"email":       "a@example.com",
		"x.looks-enc": "x.also",
		"-lead":       "trail-",
		"ünïcode":     "✓",
	}
	labels, err := metadataLabels(md)
	if err != nil {
		t.Fatal(err)
	}
	labels[LabelTemplate] = "base"
	if err := v1alpha1.ValidateLabels(labels); err != nil {
		t.Fatalf("the labels are not valid Kubernetes labels: %v", err)
	}
	if labels[LabelMetadataPrefix+"user"] != "alice" {
		t.Errorf("a label-safe entry is not kept as it is: %v", labels)
	}
	if got := metadataOf(labels); !maps.Equal(got, md) {
		t.Errorf("metadataOf(metadataLabels(md)) = %v, want %v", got, md)
	}
}

func TestMetadataLabelsRefuses(t *testing.T) {
	for name, md := range map[string]map[string]string{
		"empty key":    {"": "v"},
		"long key":     {strings.Repeat("k", 64): "v"},
		"long value":   {"k": strings.Repeat("v", 64)},
		"long encoded": {"k": strings.Repeat("@", 40)},
		"too many":     manyEntries(maxMetadata + 1),
	} {
		if _, err := metadataLabels(md); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func manyEntries(n int) map[string]string {
	md := map[string]string{}
	for i := range n {
		md["k"+strings.Repeat("x", i)] = "v"
	}
	return md
}

// TestMetadataQuery decodes what the SDK sends (e2b@2.51.0, seen on the
// wire): each key and value encoded with encodeURIComponent, the pairs
// then form-encoded, the whole encoded again as the parameter, which
// net/url decodes once.
func TestMetadataQuery(t *testing.T) {
	const raw = "metadata=user%3Dalice%26note%3Da%252526b%25253Dc%252520d%252525%26%2525C3%2525BCn%3D%2525E2%25259C%252593%25252B&state=running,paused&limit=5"
	q, err := url.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	got, err := metadataQuery(q.Get("metadata"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"user": "alice", "note": "a&b=c d%", "ün": "✓+"}
	if !maps.Equal(got, want) {
		t.Errorf("metadataQuery = %q, want %q", got, want)
	}
	// A client that encodes once.
	if got, _ := metadataQuery("user=alice&pct=100%25"); !maps.Equal(got, map[string]string{"user": "alice", "pct": "100%"}) {
		t.Errorf("metadataQuery of a once-encoded query = %q", got)
	}
}

func TestCursorRoundTrip(t *testing.T) {
	c := cursor{started: time.Unix(1700000000, 123456789), id: "abc123"}
	got, err := parseCursor(c.String())
	if err != nil || got.compare(c) != 0 {
		t.Fatalf("parseCursor(%s) = %v, %v; want %v", c, got, err, c)
	}
	for _, bad := range []string{"!!", "bm9zbGFzaA", "YS9i"} {
		if _, err := parseCursor(bad); err == nil {
			t.Errorf("parseCursor(%q) accepted it", bad)
		}
	}
}

func TestParseListQuery(t *testing.T) {
	lq, err := parseListQuery(url.Values{
		"metadata": {"user=alice&note=a%2520b"}, "template": {"base"}, "state": {"running,paused"},
		"order": {"asc"}, "limit": {"7"}, "startedAfter": {"2026-01-02T03:04:05Z"},
	})
	if err != nil {
		t.Fatal(err)
	}
	wantSel := LabelTemplate + "," + LabelMetadataPrefix + "note=" + encodeLabel("a b") + "," + LabelMetadataPrefix + "user=alice," + LabelTemplate + "=base"
	if lq.selector != wantSel || lq.none || !lq.asc || lq.limit != 7 || !lq.after.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) || lq.from != nil {
		t.Errorf("parseListQuery = %+v\nwant selector %s", lq, wantSel)
	}
	if lq, _ := parseListQuery(url.Values{"state": {"paused"}}); !lq.none {
		t.Error("state=paused selects something")
	}
	if lq, _ := parseListQuery(url.Values{}); lq.limit != defaultListLimit || lq.asc || lq.selector != LabelTemplate {
		t.Errorf("defaults: %+v", lq)
	}
	for _, bad := range []url.Values{
		{"state": {"stopped"}}, {"order": {"up"}}, {"limit": {"0"}}, {"limit": {"101"}}, {"limit": {"x"}},
		{"startedAfter": {"yesterday"}}, {"nextToken": {"!"}}, {"metadata": {"k=%zz"}},
		{"metadata": {"=v"}},
	} {
		if _, err := parseListQuery(bad); err == nil {
			t.Errorf("parseListQuery(%v) accepted it", bad)
		}
	}
}

// TestTokenKey checks the tokens' derivation: the same for the same
// secret and sandbox (so any controller with the secret checks them), and
// another for another namespace, name or secret.
func TestTokenKey(t *testing.T) {
	k := tokenKey("secret-1")
	tok := k.token("ns", "abc")
	if len(tok) != 32 || tok != tokenKey("secret-1").token("ns", "abc") {
		t.Fatalf("token %q: want 32 hex digits, the same each time", tok)
	}
	for _, other := range []string{k.token("ns2", "abc"), k.token("ns", "abd"), tokenKey("secret-2").token("ns", "abc"), k.token("ns/a", "bc"), k.token("n", "s/abc")} {
		if other == tok {
			t.Errorf("two sandboxes share the token %s", tok)
		}
	}
	sb := &fsbv1.Sandbox{Namespace: "ns", Name: "abc"}
	if !k.matches(sb, tok) || k.matches(sb, tok[:31]) || k.matches(sb, "") || k.matches(&fsbv1.Sandbox{Namespace: "ns2", Name: "abc"}, tok) {
		t.Error("matches accepts another token, or refuses the sandbox's")
	}
}

func TestExpiryRoundsUp(t *testing.T) {
	for now, want := range map[time.Time]time.Time{
		time.Unix(100, 1):           time.Unix(111, 0),
		time.Unix(100, 999_999_999): time.Unix(111, 0),
		time.Unix(100, 0):           time.Unix(110, 0),
	} {
		s := &Server{cfg: Config{Now: func() time.Time { return now }}}
		if got := s.expiry(10 * time.Second); !got.Equal(want) {
			t.Errorf("expiry at %s + 10s = %s, want %s", now, got, want)
		}
	}
}

func TestInMetricWindow(t *testing.T) {
	now := time.Unix(1000, 500_000_000)
	cases := []struct {
		query string
		want  bool
		err   string
	}{
		{"", true, ""},
		{"start=900", true, ""},
		{"end=1100", true, ""},
		{"start=900&end=1100", true, ""},
		{"start=1000&end=1000", true, ""}, // the SDK rounded both to now's second
		{"end=1000", true, ""},            // half a second ago: within the slack
		{"start=1001", true, ""},          // half a second ahead: within the slack
		{"end=999", false, ""},
		{"start=1002", false, ""},
		{"start=1010", false, ""},
		{"start=100&end=200", false, ""},
		{"start=soon", false, `start "soon": want a Unix time in seconds`},
		{"end=1.5", false, `end "1.5": want a Unix time in seconds`},
		{"start=1100&end=900", false, "end 900 is before start 1100"},
	}
	for _, tc := range cases {
		q, _ := url.ParseQuery(tc.query)
		got, err := inMetricWindow(q, now)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%q: %v, want error %q", tc.query, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %v, %v; want %v", tc.query, got, err, tc.want)
		}
	}
}

func TestToMetric(t *testing.T) {
	disk := uint64(4096)
	at := time.Date(2026, 12, 3, 8, 0, 0, 250_000_000, time.UTC)
	u := &fsbv1.SandboxUsage{Time: timestamppb.New(at), CpuPercent: 47.06171, CpuCount: 2,
		MemoryUsedBytes: 10, MemoryCacheBytes: 20, NodeMemoryBytes: 1000, DiskUsedBytes: &disk}
	want := sandboxMetric{Timestamp: "2026-12-03T08:00:00.25Z", TimestampUnix: at.Unix(), CPUCount: 2, CPUUsedPct: 47.06,
		MemUsed: 10, MemTotal: 1000, MemCache: 20, DiskUsed: 4096}
	if got := toMetric(u); got != want {
		t.Errorf("without a limit:\n got %+v\nwant %+v", got, want)
	}
	// A limit is memTotal; an unknown disk is 0.
	u.MemoryLimitBytes, u.DiskUsedBytes = 300, nil
	want.MemTotal, want.DiskUsed = 300, 0
	if got := toMetric(u); got != want {
		t.Errorf("with a limit:\n got %+v\nwant %+v", got, want)
	}
}
