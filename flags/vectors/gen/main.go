// Command gen writes ../flagd_fractional.json: reference bucketing vectors
// produced by flagd's own JSON evaluator (the `fractional` JSON-logic
// operator), which the neotenant-flags crate checks its sticky-rollout
// bucketing against.
//
// This program owns only the vector table. It must never be built by cargo
// or CI, and it must never invent expected values: every variant index in the
// output comes from flagd's resolver.
//
// Usage (from this directory):
//
//	go run . > ../flagd_fractional.json
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/open-feature/flagd/core/pkg/evaluator"
	"github.com/open-feature/flagd/core/pkg/logger"
	"github.com/open-feature/flagd/core/pkg/store"
	flagdsync "github.com/open-feature/flagd/core/pkg/sync"
)

const fallback = "fallback"

var flagKeys = []string{
	"new-checkout",
	"dark_mode.v2",
	"billing.rollout-2026",
	"a",
	"x",
	"Z",
	"フラグ",
	"émoji-🚀",
}

var targetingKeys = []string{
	"0",
	"user-1",
	"user-2",
	"alice@example.com",
	"bob.smith+test@corp.example.org",
	"3f2b1c9e-8d4a-4e6f-9b7a-1c2d3e4f5a6b",
	"018f4a2e-7c3b-7d1e-a5f6-0b1c2d3e4f50",
	"00000000-0000-0000-0000-000000000000",
	"日本語",
	"Ünïcödé ✓",
	"🦀🦀🦀",
	"tenant:42/user:1337",
	" leading and trailing spaces ",
	strings.Repeat("abcdefghij", 20),
	strings.Repeat("ü", 150),
	"x",
}

var weightSets = [][]int{
	{50, 50},
	{25, 75},
	{1, 99},
	{33, 33, 34},
	{10, 20, 30, 40},
	{100},
	{0, 100},
	{5, 5, 90},
	{1, 2, 3},
	{7, 13},
	{99, 1},
	{0, 0},
	{1000000, 1},
}

type vector struct {
	FlagKey      string `json:"flag_key"`
	TargetingKey string `json:"targeting_key"`
	Weights      []int  `json:"weights"`
	VariantIndex *int   `json:"variant_index"`
}

// flagConfig renders a flagd flag configuration holding every key in keys with
// the same fractional split over variants v0..vN.
func flagConfig(keys []string, weights []int) string {
	variants := map[string]string{fallback: fallback}
	split := []any{}
	for i, w := range weights {
		name := "v" + strconv.Itoa(i)
		variants[name] = name
		split = append(split, []any{name, w})
	}
	flags := map[string]any{}
	for _, k := range keys {
		flags[k] = map[string]any{
			"state":          "ENABLED",
			"defaultVariant": fallback,
			"variants":       variants,
			"targeting":      map[string]any{"fractional": split},
		}
	}
	out, err := json.Marshal(map[string]any{"flags": flags})
	if err != nil {
		panic(err)
	}
	return string(out)
}

func main() {
	type pending struct {
		flagKey, targetingKey string
		weightSet             int
	}
	var cases []pending
	for i, fk := range flagKeys {
		for j, tk := range targetingKeys {
			for _, off := range []int{0, 5} {
				cases = append(cases, pending{fk, tk, (i*3 + j + off) % len(weightSets)})
			}
		}
	}

	// One evaluator per weight set, holding every flag key that uses it.
	ctx := context.Background()
	log := logger.NewLogger(nil, false)
	resolvers := make([]*evaluator.JSON, len(weightSets))
	for ws, weights := range weightSets {
		s, err := store.NewStore(log, []string{"vectors"})
		if err != nil {
			panic(err)
		}
		je := evaluator.NewJSON(log, s)
		if err := je.SetState(flagdsync.DataSync{FlagData: flagConfig(flagKeys, weights), Source: "vectors"}); err != nil {
			panic(err)
		}
		resolvers[ws] = je
	}

	var out []vector
	for _, c := range cases {
		weights := weightSets[c.weightSet]
		total := 0
		for _, w := range weights {
			total += w
		}
		_, variant, reason, _, err := resolvers[c.weightSet].ResolveStringValue(
			ctx, "gen", c.flagKey, map[string]any{"targetingKey": c.targetingKey})
		if err != nil {
			panic(fmt.Sprintf("%q/%q: %v", c.flagKey, c.targetingKey, err))
		}
		v := vector{FlagKey: c.flagKey, TargetingKey: c.targetingKey, Weights: weights}
		if variant == fallback {
			// flagd serves the default variant only when the split has no weight.
			if total != 0 {
				panic(fmt.Sprintf("%q/%q: unexpected fallback (reason %s)", c.flagKey, c.targetingKey, reason))
			}
		} else {
			idx, err := strconv.Atoi(strings.TrimPrefix(variant, "v"))
			if err != nil || total == 0 {
				panic(fmt.Sprintf("%q/%q: unexpected variant %q", c.flagKey, c.targetingKey, variant))
			}
			v.VariantIndex = &idx
		}
		out = append(out, v)
	}

	var b strings.Builder
	b.WriteString("[\n")
	for i, v := range out {
		var line strings.Builder
		enc := json.NewEncoder(&line)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			panic(err)
		}
		b.WriteString("  ")
		b.WriteString(strings.TrimSuffix(line.String(), "\n"))
		if i+1 < len(out) {
			b.WriteString(",")
		}
		b.WriteString("\n")
	}
	b.WriteString("]\n")
	fmt.Fprint(os.Stdout, b.String())
}
