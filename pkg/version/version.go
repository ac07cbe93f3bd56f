// Package version holds the build's version and commit, set by the linker:
//
//	-X github.com/fast-sandbox/fast-sandbox/pkg/version.Version=v0.1.0
//	-X github.com/fast-sandbox/fast-sandbox/pkg/version.Commit=abc1234
package version

// Version is the release this binary was built from ("dev" when unset).
var Version = "dev"

// Commit is the source commit this binary was built from.
var Commit = "unknown"
