package httpserver

import (
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
)

// LoopbackUnlessHost returns addr, a listen address from a flag, with
// 127.0.0.1 as its host when it names only a port ("6060"): the metrics and
// pprof servers listen on loopback unless their flag opens them
// (":6060", "0.0.0.0:6060").
func LoopbackUnlessHost(addr string) string {
	if _, err := strconv.ParseUint(addr, 10, 16); err == nil {
		return net.JoinHostPort("127.0.0.1", addr)
	}
	return addr
}

// Pprof returns Go's profiling endpoints under /debug/pprof/, for the
// roles' --pprof-address (never on an API port: they are unauthenticated).
func Pprof() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
