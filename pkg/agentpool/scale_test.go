package agentpool

import (
	"testing"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
)

func TestScale(t *testing.T) {
	// The sample's pool: poolMin 1, poolMax 3, bufferMin 1, bufferMax 1.
	sample := v1alpha1.PoolCapacity{PoolMin: 1, PoolMax: 3, BufferMin: 1, BufferMax: 1}
	wide := v1alpha1.PoolCapacity{PoolMin: 2, PoolMax: 10, BufferMin: 2, BufferMax: 4}
	for _, tc := range []struct {
		name string
		cap  v1alpha1.PoolCapacity
		n    Counts
		want Plan
	}{
		{"empty pool starts poolMin", sample, Counts{}, Plan{Add: 1}},
		{"a starting pod is not doubled", sample, Counts{Total: 1, Pending: 1}, Plan{}},
		{"one idle agent: at rest", sample, Counts{Total: 1, Idle: 1}, Plan{}},
		{"its agent filled: one more for the buffer", sample, Counts{Total: 1, Busy: 1}, Plan{Add: 1}},
		{"two busy: a third", sample, Counts{Total: 2, Busy: 2}, Plan{Add: 1}},
		{"all busy at poolMax: nothing to add", sample, Counts{Total: 3, Busy: 3}, Plan{}},
		{"emptied: back to the buffer", sample, Counts{Total: 3, Idle: 3}, Plan{RemoveIdle: 2}},
		{"emptied but one busy: keep one idle", sample, Counts{Total: 3, Busy: 1, Idle: 2}, Plan{RemoveIdle: 1}},
		{"poolMin beats the buffer", v1alpha1.PoolCapacity{PoolMin: 3, PoolMax: 5, BufferMax: 0}, Counts{Total: 3, Idle: 3}, Plan{}},
		{"buffer capped at poolMax", wide, Counts{Total: 9, Busy: 9}, Plan{Add: 1}},
		{"below poolMin and buffer: the larger gap", wide, Counts{Total: 1, Busy: 1}, Plan{Add: 2}},
		{"poolMin gap larger", v1alpha1.PoolCapacity{PoolMin: 4, PoolMax: 10, BufferMin: 1, BufferMax: 4}, Counts{Total: 1, Idle: 1}, Plan{Add: 3}},
		{"within bounds", wide, Counts{Total: 6, Busy: 3, Idle: 3}, Plan{}},
		{"idle above bufferMax", wide, Counts{Total: 8, Busy: 2, Idle: 6}, Plan{RemoveIdle: 2}},
		{"pending counts toward the buffer", wide, Counts{Total: 4, Busy: 2, Idle: 1, Pending: 1}, Plan{}},
		{"lowered poolMax: idle first", v1alpha1.PoolCapacity{PoolMin: 0, PoolMax: 2, BufferMin: 0, BufferMax: 5},
			Counts{Total: 5, Busy: 1, Idle: 2, Pending: 2}, Plan{RemoveIdle: 2, RemovePending: 1}},
		{"lowered poolMax, all busy: none removed", v1alpha1.PoolCapacity{PoolMin: 0, PoolMax: 1, BufferMin: 0, BufferMax: 0},
			Counts{Total: 3, Busy: 3}, Plan{}},
		{"poolMin 0, nothing idle wanted: scale to zero", v1alpha1.PoolCapacity{PoolMin: 0, PoolMax: 3, BufferMin: 0, BufferMax: 0},
			Counts{Total: 2, Idle: 2}, Plan{RemoveIdle: 2}},
		{"pending pods above bufferMax are kept", v1alpha1.PoolCapacity{PoolMin: 0, PoolMax: 5, BufferMin: 0, BufferMax: 0},
			Counts{Total: 2, Pending: 2}, Plan{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.n.Total != tc.n.Busy+tc.n.Idle+tc.n.Pending {
				t.Fatalf("bad case: %+v", tc.n)
			}
			if got := Scale(&tc.cap, tc.n); got != tc.want {
				t.Errorf("Scale(%+v, %+v) = %+v, want %+v", tc.cap, tc.n, got, tc.want)
			}
		})
	}
	// A pool without capacity has agents started by other means: its pods,
	// if any, are neither added to nor removed.
	for _, n := range []Counts{{}, {Total: 2, Idle: 2}, {Total: 1, Busy: 1}} {
		if got := Scale(nil, n); got != (Plan{}) {
			t.Errorf("Scale(nil, %+v) = %+v, want nothing", n, got)
		}
	}
}
