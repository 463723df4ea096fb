//go:build tools

// Package tools pins pint, the Prometheus rules linter, as a module dependency so that
// `go build` here builds the version go.sum records.
package tools

import _ "github.com/cloudflare/pint/cmd/pint"
