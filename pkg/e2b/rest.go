package e2b

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/httpserver"
)

// maxBodyBytes bounds a REST request's body: E2B's are small JSON objects.
const maxBodyBytes = 1 << 20

// List pagination, as E2B's API has it.
const (
	defaultListLimit = 100
	maxListLimit     = 100
)

// routes registers the REST API: the paths and methods E2B's SDK calls that
// Fast Sandbox serves. Anything else is answered 501 (serveREST).
func (s *Server) routes() {
	s.rest.HandleFunc("POST /v2/sandboxes", s.create)
	s.rest.HandleFunc("GET /v2/sandboxes", s.list)
	s.rest.HandleFunc("GET /sandboxes/{id}", s.get)
	s.rest.HandleFunc("DELETE /sandboxes/{id}", s.kill)
	s.rest.HandleFunc("POST /sandboxes/{id}/timeout", s.setTimeout)
	s.rest.HandleFunc("POST /v2/sandboxes/{id}/connect", s.connect)
	s.rest.HandleFunc("POST /sandboxes/{id}/connect", s.connect)
	s.rest.HandleFunc("GET /sandboxes/{id}/metrics", s.metrics)
}

type namespaceKey struct{}

// namespaceOf returns the namespace of the request's API key (serveREST
// put it there).
func namespaceOf(ctx context.Context) string {
	ns, _ := ctx.Value(namespaceKey{}).(string)
	return ns
}

// serveREST checks the API key, then serves the request's route, or 501.
func (s *Server) serveREST(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/health" {
		w.WriteHeader(http.StatusOK)
		return
	}
	key := r.Header.Get(HeaderAPIKey)
	if key == "" {
		writeError(w, http.StatusUnauthorized, "no API key: send it in the X-API-Key header (the SDK sends E2B_API_KEY)")
		return
	}
	ns, ok := s.cfg.Keys.Namespace(key)
	if !ok {
		writeError(w, http.StatusUnauthorized, "invalid API key")
		return
	}
	httpserver.Authenticated(r.Context())
	if _, pattern := s.rest.Handler(r); pattern == "" {
		s.notImplemented(w, r)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	s.rest.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), namespaceKey{}, ns)))
}

// unsupported says why the E2B features Fast Sandbox lacks are missing, by
// the last segment of their path.
var unsupported = map[string]string{
	"pause":     "pausing a sandbox needs checkpoint/restore of its container, which Fast Sandbox does not do yet",
	"resume":    "pausing a sandbox needs checkpoint/restore of its container, which Fast Sandbox does not do yet",
	"snapshots": "snapshots need checkpoint/restore of a sandbox's container, which Fast Sandbox does not do yet",
	"fork":      "forking needs checkpoint/restore of a sandbox's container, which Fast Sandbox does not do yet",
	"network":   "a sandbox shares its agent's network namespace; per-sandbox network rules are not supported yet",
	"refreshes": "use setTimeout (POST /sandboxes/{id}/timeout) to extend a sandbox's life",
	"logs":      "sandbox logs are served by fsb ctl logs, not E2B's API",
}

// notImplemented answers 501 with E2B's error body, and logs the request:
// a program that needs what is missing is worth knowing about.
func (s *Server) notImplemented(w http.ResponseWriter, r *http.Request) {
	seg := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	why, known := unsupported[seg]
	if !known {
		why = "Fast Sandbox does not serve this part of E2B's API"
	}
	s.log.Warn("E2B request not supported", slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.String("sandbox", r.Header.Get(HeaderSandboxID)))
	writeError(w, http.StatusNotImplemented, fmt.Sprintf("%s %s is not supported: %s", r.Method, r.URL.Path, why))
}

// decodeBody reads the JSON body into v. Unknown fields are ignored, as
// E2B's API ignores them: the SDK sends fields of newer APIs. An empty body
// leaves v as it is (connect's is optional).
func decodeBody(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return fmt.Errorf("read the body: %w", err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("the body is not the JSON object expected: %w", err)
	}
	return nil
}

// given reports whether a raw JSON field was sent with a value.
func given(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && !bytes.Equal(t, []byte("null"))
}

// newSandbox is the body of a create (E2B's NewSandboxV2): the fields Fast
// Sandbox serves, and those it refuses rather than ignore.
type newSandbox struct {
	TemplateID string            `json:"templateID"`
	Timeout    *int64            `json:"timeout"`
	Metadata   map[string]string `json:"metadata"`
	EnvVars    map[string]string `json:"envVars"`

	AllowInternetAccess *bool           `json:"allow_internet_access"`
	Network             json.RawMessage `json:"network"`
	AutoPause           *bool           `json:"autoPause"`
	AutoResume          *struct {
		Enabled bool `json:"enabled"`
	} `json:"autoResume"`
	MCP          json.RawMessage `json:"mcp"`
	IAM          json.RawMessage `json:"iam"`
	VolumeMounts json.RawMessage `json:"volumeMounts"`
}

// refused returns why the create asks for what Fast Sandbox cannot give,
// or "". Silently ignoring these would be wrong: a sandbox meant to have
// no internet access that has it is a security fault.
func (n *newSandbox) refused() string {
	switch {
	case n.AllowInternetAccess != nil && !*n.AllowInternetAccess:
		return "allow_internet_access false: a sandbox shares its agent's network namespace; cutting it off is not supported yet"
	case given(n.Network):
		return "network: per-sandbox network rules are not supported yet"
	case n.AutoPause != nil && *n.AutoPause, n.AutoResume != nil && n.AutoResume.Enabled:
		return "autoPause and autoResume: pausing a sandbox needs checkpoint/restore, which is not supported yet"
	case given(n.MCP):
		return "mcp: the MCP gateway is not part of Fast Sandbox's templates"
	case given(n.IAM):
		return "iam: workload identity tokens are not supported"
	case given(n.VolumeMounts) && string(bytes.TrimSpace(n.VolumeMounts)) != "[]":
		return "volumeMounts: volumes are not supported yet"
	}
	return ""
}

// expiry is when a sandbox given timeout now expires: rounded up to a
// whole second, since the API's objects keep whole seconds and cutting the
// fraction off would end the sandbox before its time.
func (s *Server) expiry(timeout time.Duration) time.Time {
	t := s.cfg.Now().Add(timeout)
	if r := t.Truncate(time.Second); !r.Equal(t) {
		return r.Add(time.Second)
	}
	return t
}

// timeoutFrom returns the timeout of a request in seconds, DefaultTimeout
// when it names none.
func timeoutFrom(secs *int64) (time.Duration, error) {
	if secs == nil {
		return DefaultTimeout, nil
	}
	// The bound keeps the expiry a time the API can hold.
	if *secs < 1 || *secs > 10*365*24*3600 {
		return 0, fmt.Errorf("timeout %d: want a number of seconds from 1 up", *secs)
	}
	return time.Duration(*secs) * time.Second, nil
}

// create serves POST /v2/sandboxes: a sandbox of the template, with its
// own ID and access token, expiring after the timeout.
func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var body newSandbox
	if err := decodeBody(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if why := body.refused(); why != "" {
		s.log.Warn("E2B create refused", slog.String("why", why))
		writeError(w, http.StatusNotImplemented, why)
		return
	}
	name := cmp.Or(body.TemplateID, DefaultTemplate)
	tpl, ok := s.cfg.Templates[name]
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("template %q not found: this server has %s", brief(name), strings.Join(s.cfg.Templates.Names(), ", ")))
		return
	}
	timeout, err := timeoutFrom(body.Timeout)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	labels, err := metadataLabels(body.Metadata)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	labels[LabelTemplate] = name
	spec := tpl.spec()
	for _, k := range slices.Sorted(maps.Keys(body.EnvVars)) {
		spec.Envs = append(spec.Envs, &fsbv1.EnvVar{Name: k, Value: body.EnvVars[k]})
	}
	spec.ExpireTime = timestamppb.New(s.expiry(timeout))
	ns, id := namespaceOf(r.Context()), newSandboxID()
	res, err := s.cfg.API.CreateSandbox(r.Context(), connect.NewRequest(&fsbv1.CreateSandboxRequest{
		Namespace: ns, Name: id, Labels: labels, Spec: spec,
	}))
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, toSandboxJSON(res.Msg.GetSandbox(), s.tokens.token(ns, id)))
}

// lookup returns the sandbox of the request's {id} in the key's
// namespace, or a NotFound error when E2B does not show it (visible).
func (s *Server) lookup(ctx context.Context, namespace, id string) (*fsbv1.Sandbox, error) {
	res, err := s.cfg.API.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Namespace: namespace, Name: id}))
	if err != nil {
		if connect.CodeOf(err) == connect.CodeInvalidArgument {
			// Not a name a sandbox can have: none has it.
			return nil, notFound(id)
		}
		return nil, err
	}
	if !visible(res.Msg.GetSandbox()) {
		return nil, notFound(id)
	}
	return res.Msg.GetSandbox(), nil
}

func notFound(id string) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("sandbox %q not found", brief(id)))
}

// get serves GET /sandboxes/{id}.
func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	sb, err := s.lookup(r.Context(), namespaceOf(r.Context()), r.PathValue("id"))
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toDetail(sb, s.tokens.token(sb.GetNamespace(), sb.GetName())))
}

// kill serves DELETE /sandboxes/{id}: it answers once the container is
// gone.
func (s *Server) kill(w http.ResponseWriter, r *http.Request) {
	ns, id := namespaceOf(r.Context()), r.PathValue("id")
	// Only a sandbox E2B shows may be killed through it: a name of the
	// namespace made otherwise is not E2B's to remove.
	if _, err := s.lookup(r.Context(), ns, id); err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	if _, err := s.cfg.API.DeleteSandbox(r.Context(), connect.NewRequest(&fsbv1.DeleteSandboxRequest{Namespace: ns, Name: id})); err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// timeoutBody is the body of set timeout and connect.
type timeoutBody struct {
	Timeout *int64 `json:"timeout"`
}

// setTimeout serves POST /sandboxes/{id}/timeout: the sandbox now expires
// timeout seconds from now, sooner or later than before.
func (s *Server) setTimeout(w http.ResponseWriter, r *http.Request) {
	var body timeoutBody
	if err := decodeBody(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if body.Timeout == nil {
		writeError(w, http.StatusBadRequest, "timeout is required")
		return
	}
	timeout, err := timeoutFrom(body.Timeout)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ns, id := namespaceOf(r.Context()), r.PathValue("id")
	if _, err := s.lookup(r.Context(), ns, id); err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	if _, err := s.expireAt(r.Context(), ns, id, s.expiry(timeout)); err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) expireAt(ctx context.Context, ns, id string, t time.Time) (*fsbv1.Sandbox, error) {
	res, err := s.cfg.API.UpdateSandbox(ctx, connect.NewRequest(&fsbv1.UpdateSandboxRequest{
		Namespace: ns, Name: id, ExpireTime: timestamppb.New(t),
	}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetSandbox(), nil
}

// connect serves POST /v2/sandboxes/{id}/connect (and the older
// /sandboxes/{id}/connect): a running sandbox's ID and access token, its
// life extended to at least timeout from now, never shortened (as E2B's).
func (s *Server) connect(w http.ResponseWriter, r *http.Request) {
	var body timeoutBody
	if err := decodeBody(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	timeout, err := timeoutFrom(body.Timeout)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ns, id := namespaceOf(r.Context()), r.PathValue("id")
	sb, err := s.lookup(r.Context(), ns, id)
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	// A sandbox without an expiry (cleared outside E2B's API) keeps none.
	if exp, end := sb.GetSpec().GetExpireTime(), s.expiry(timeout); exp != nil && exp.AsTime().Before(end) {
		if sb, err = s.expireAt(r.Context(), ns, id, end); err != nil {
			s.writeAPIError(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, toSandboxJSON(sb, s.tokens.token(ns, id)))
}

// metricWindowSlack widens a metrics query's window on both sides: the
// SDK rounds its start and end to whole seconds, so a window that ends
// "now" can end a fraction of a second before the request arrives.
const metricWindowSlack = time.Second

// sandboxMetric is one sample of E2B's SandboxMetric.
type sandboxMetric struct {
	Timestamp     string  `json:"timestamp"`
	TimestampUnix int64   `json:"timestampUnix"`
	CPUCount      int32   `json:"cpuCount"`
	CPUUsedPct    float64 `json:"cpuUsedPct"`
	MemUsed       uint64  `json:"memUsed"`
	MemTotal      uint64  `json:"memTotal"`
	MemCache      uint64  `json:"memCache"`
	DiskUsed      uint64  `json:"diskUsed"`
	DiskTotal     uint64  `json:"diskTotal"`
}

// metrics serves GET /sandboxes/{id}/metrics. Fast Sandbox keeps no
// history of a sandbox's usage: it answers one sample, read now by the
// sandbox's agent (FastPathService.GetSandboxUsage), when the query's
// start-end window (Unix seconds, either optional) holds now, and no
// samples otherwise, as E2B does for a window it has none in. A sandbox
// that does not run (it ended) has no samples either.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	ns, id := namespaceOf(r.Context()), r.PathValue("id")
	if _, err := s.lookup(r.Context(), ns, id); err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	holdsNow, err := inMetricWindow(r.URL.Query(), s.cfg.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !holdsNow {
		writeJSON(w, http.StatusOK, []sandboxMetric{})
		return
	}
	resp, err := s.cfg.API.GetSandboxUsage(r.Context(), connect.NewRequest(&fsbv1.GetSandboxUsageRequest{Namespace: ns, Name: id}))
	if connect.CodeOf(err) == connect.CodeFailedPrecondition {
		writeJSON(w, http.StatusOK, []sandboxMetric{})
		return
	}
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, []sandboxMetric{toMetric(resp.Msg.GetUsage())})
}

// toMetric turns a usage into E2B's sample. E2B's memTotal is the memory
// the sandbox may use: its limit, else its node's; its diskTotal is 0, as
// a sandbox's root file system has no size limit of its own.
func toMetric(u *fsbv1.SandboxUsage) sandboxMetric {
	at := u.GetTime().AsTime()
	return sandboxMetric{
		Timestamp:     at.UTC().Format(time.RFC3339Nano),
		TimestampUnix: at.Unix(),
		CPUCount:      u.GetCpuCount(),
		// Two decimals, as a percentage is read.
		CPUUsedPct: math.Round(u.GetCpuPercent()*100) / 100,
		MemUsed:    u.GetMemoryUsedBytes(),
		MemTotal:   cmp.Or(u.GetMemoryLimitBytes(), u.GetNodeMemoryBytes()),
		MemCache:   u.GetMemoryCacheBytes(),
		DiskUsed:   u.GetDiskUsedBytes(),
	}
}

// inMetricWindow reports whether now is in the window a metrics query's
// start and end (Unix seconds, each optional) give, with
// metricWindowSlack on either side, or says what in them is wrong.
func inMetricWindow(q url.Values, now time.Time) (bool, error) {
	bound := func(name string) (time.Time, bool, error) {
		v := q.Get(name)
		if v == "" {
			return time.Time{}, false, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return time.Time{}, false, fmt.Errorf("%s %q: want a Unix time in seconds", name, v)
		}
		return time.Unix(n, 0), true, nil
	}
	start, hasStart, err := bound("start")
	if err != nil {
		return false, err
	}
	end, hasEnd, err := bound("end")
	if err != nil {
		return false, err
	}
	if hasStart && hasEnd && end.Before(start) {
		return false, fmt.Errorf("end %d is before start %d", end.Unix(), start.Unix())
	}
	if hasStart && now.Before(start.Add(-metricWindowSlack)) {
		return false, nil
	}
	if hasEnd && now.After(end.Add(metricWindowSlack)) {
		return false, nil
	}
	return true, nil
}

// listQuery is what a list asks for.
type listQuery struct {
	// selector selects the key's E2B sandboxes with the metadata and
	// template asked for.
	selector string
	// none is set when the states asked for hold nothing (paused).
	none  bool
	after time.Time
	asc   bool
	limit int
	from  *cursor
}

// parseListQuery reads list's query, or says what in it is wrong.
func parseListQuery(q url.Values) (listQuery, error) {
	lq := listQuery{limit: defaultListLimit}
	selector := []string{LabelTemplate}
	if md := q.Get("metadata"); md != "" {
		req, err := metadataQuery(md)
		if err != nil {
			return lq, err
		}
		labels, err := metadataLabels(req)
		if err != nil {
			return lq, err
		}
		for _, k := range slices.Sorted(maps.Keys(labels)) {
			selector = append(selector, k+"="+labels[k])
		}
	}
	if t := q.Get("template"); t != "" {
		selector = append(selector, LabelTemplate+"="+encodeLabel(t))
	}
	lq.selector = strings.Join(selector, ",")
	if states := q["state"]; len(states) > 0 {
		lq.none = true
		for _, st := range states {
			for v := range strings.SplitSeq(st, ",") {
				switch v {
				case stateRunning:
					lq.none = false
				case "paused":
					// Nothing is ever paused here.
				default:
					return lq, fmt.Errorf("state %q: want running or paused", brief(v))
				}
			}
		}
	}
	if v := q.Get("startedAfter"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return lq, fmt.Errorf("startedAfter %q: want an RFC 3339 time", brief(v))
		}
		lq.after = t
	}
	switch o := q.Get("order"); o {
	case "", "desc":
	case "asc":
		lq.asc = true
	default:
		return lq, fmt.Errorf("order %q: want asc or desc", brief(o))
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return lq, fmt.Errorf("limit %q: want 1 to %d", brief(v), maxListLimit)
		}
		lq.limit = n
	}
	if v := q.Get("nextToken"); v != "" {
		c, err := parseCursor(v)
		if err != nil {
			return lq, err
		}
		lq.from = &c
	}
	return lq, nil
}

// order compares two sandboxes' places in the list: by start, then ID,
// newest first unless asc.
func (lq listQuery) order(a, b cursor) int {
	if lq.asc {
		return a.compare(b)
	}
	return b.compare(a)
}

// list serves GET /v2/sandboxes: the key's sandboxes, newest first (or
// oldest with order=asc), filtered by metadata and template (by the API,
// with a label selector), state and start time, a page at a time. The
// next page's token, in X-Next-Token, is the position of the page's last
// sandbox, so that sandboxes created or killed between pages neither
// repeat nor shift the rest.
func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	lq, err := parseListQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if lq.none {
		writeJSON(w, http.StatusOK, []sandboxDetail{})
		return
	}
	res, err := s.cfg.API.ListSandboxes(r.Context(), connect.NewRequest(&fsbv1.ListSandboxesRequest{
		Namespace: namespaceOf(r.Context()), LabelSelector: lq.selector,
	}))
	if err != nil {
		s.writeAPIError(w, r, err)
		return
	}
	var items []*fsbv1.Sandbox
	for _, sb := range res.Msg.GetSandboxes() {
		if visible(sb) && !sb.GetCreateTime().AsTime().Before(lq.after) {
			items = append(items, sb)
		}
	}
	slices.SortFunc(items, func(a, b *fsbv1.Sandbox) int { return lq.order(cursorOf(a), cursorOf(b)) })
	total := len(items)
	if lq.from != nil {
		// The first sandbox past the cursor: one at the cursor itself
		// counts as before it.
		i, _ := slices.BinarySearchFunc(items, *lq.from, func(sb *fsbv1.Sandbox, c cursor) int {
			if d := lq.order(cursorOf(sb), c); d != 0 {
				return d
			}
			return -1
		})
		items = items[i:]
	}
	if len(items) > lq.limit {
		items = items[:lq.limit]
		w.Header().Set("X-Next-Token", cursorOf(items[len(items)-1]).String())
	}
	w.Header().Set("X-Total-Running", strconv.Itoa(total))
	out := make([]sandboxDetail, 0, len(items))
	for _, sb := range items {
		out = append(out, toDetail(sb, ""))
	}
	writeJSON(w, http.StatusOK, out)
}

// metadataQuery parses list's metadata query: "k1=v1&k2=v2", each key and
// value URL-encoded. The SDK encodes each with encodeURIComponent, then
// the pairs as a form (URLSearchParams), then the whole as the parameter;
// net/url undid the last, so each key and value is decoded twice here. A
// text whose second decoding fails (a client that encoded it once, with
// a '%' in it) is kept as the first gave it.
func metadataQuery(q string) (map[string]string, error) {
	out := map[string]string{}
	for pair := range strings.SplitSeq(q, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		key, err1 := url.QueryUnescape(k)
		val, err2 := url.QueryUnescape(v)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("metadata %q: %w", brief(q), err)
		}
		if d, err := url.PathUnescape(key); err == nil {
			key = d
		}
		if d, err := url.PathUnescape(val); err == nil {
			val = d
		}
		out[key] = val
	}
	return out, nil
}

// cursor is a sandbox's place in a list: its start, then its ID.
type cursor struct {
	started time.Time
	id      string
}

func cursorOf(sb *fsbv1.Sandbox) cursor {
	return cursor{started: sb.GetCreateTime().AsTime(), id: sb.GetName()}
}

func (c cursor) compare(o cursor) int {
	if d := c.started.Compare(o.started); d != 0 {
		return d
	}
	return strings.Compare(c.id, o.id)
}

// String returns the cursor as a page token.
func (c cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.started.UnixNano(), 10) + "/" + c.id))
}

func parseCursor(s string) (cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		nanos, id, ok := strings.Cut(string(b), "/")
		n, perr := strconv.ParseInt(nanos, 10, 64)
		if ok && perr == nil {
			return cursor{started: time.Unix(0, n), id: id}, nil
		}
	}
	return cursor{}, fmt.Errorf("nextToken %q: not a token this server gave", brief(s))
}
