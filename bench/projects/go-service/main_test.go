package main

import "testing"

func TestEnvOr(t *testing.T) {
	if got := envOr("KILN_BENCH_UNSET_VARIABLE", "x"); got != "x" {
		t.Fatalf("got %q", got)
	}
}
