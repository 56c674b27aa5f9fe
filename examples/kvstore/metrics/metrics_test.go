package metrics

import (
	"context"
	"io"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

func TestExporterWritesPrometheusText(t *testing.T) {
	e := New()
	defer e.Shutdown(context.Background())
	m := e.Provider.Meter("test")
	ctx := context.Background()
	attrs := metric.WithAttributes(attribute.String("raft.node.id", "1"))

	c, err := m.Int64Counter("raft.proposals.committed", metric.WithUnit("{proposal}"), metric.WithDescription("Proposals committed."))
	require.NoError(t, err)
	c.Add(ctx, 3, attrs)
	h, err := m.Float64Histogram("raft.storage.fsync.duration", metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(0.001, 0.01))
	require.NoError(t, err)
	h.Record(ctx, 0.0005, attrs)
	h.Record(ctx, 0.005, attrs)
	h.Record(ctx, 0.5, attrs)
	_, err = m.Int64ObservableGauge("raft.is_leader", metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
		o.Observe(1, attrs)
		return nil
	}))
	require.NoError(t, err)

	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	out := string(body)
	assert.Equal(t, 200, rec.Code)
	assert.Contains(t, out, "# HELP raft_proposals_committed_total Proposals committed.\n")
	assert.Contains(t, out, "# TYPE raft_proposals_committed_total counter\n")
	assert.Contains(t, out, `raft_proposals_committed_total{raft_node_id="1"} 3`+"\n")
	assert.Contains(t, out, "# TYPE raft_storage_fsync_duration_seconds histogram\n")
	assert.Contains(t, out, `raft_storage_fsync_duration_seconds_bucket{raft_node_id="1",le="0.001"} 1`+"\n")
	assert.Contains(t, out, `raft_storage_fsync_duration_seconds_bucket{raft_node_id="1",le="0.01"} 2`+"\n")
	assert.Contains(t, out, `raft_storage_fsync_duration_seconds_bucket{raft_node_id="1",le="+Inf"} 3`+"\n")
	assert.Contains(t, out, `raft_storage_fsync_duration_seconds_count{raft_node_id="1"} 3`+"\n")
	assert.Contains(t, out, `raft_is_leader{raft_node_id="1"} 1`+"\n")
}
