package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/services/audit/server"
)

// benchEnv starts etcd and one audit replica for a benchmark.
func benchEnv(b *testing.B) (*env, *replica) {
	b.Helper()
	e := newEnv(b)
	return e, e.start(b, func(c *server.Config) { c.CheckpointInterval = time.Second })
}

// BenchmarkIngest measures AppendEvents throughput: 4 producers (as the
// relays and batchers of the other services are) sending batches of policy
// decisions with tool arguments to one replica over mTLS, on the embedded
// etcd of the tests (fsync off). The figure is events/s.
func BenchmarkIngest(b *testing.B) {
	for _, size := range []int{50, 500} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			e, r := benchEnv(b)
			policy := e.as(b, r, e.service(b, devca.ServicePolicy))
			b.SetParallelism(2) // 2 × GOMAXPROCS(2) = 4 producers
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req := &auditv1.AppendEventsRequest{}
					for j := range size {
						req.Events = append(req.Events, e.decision(b, fmt.Sprintf("client-%d", j%20), "search", auditv1.Decision_DECISION_ALLOW))
					}
					resp, err := policy.AppendEvents(context.Background(), req)
					if err != nil {
						b.Error(err)
						return
					}
					if resp.GetResults()[size-1].GetStatus() != auditv1.AppendEventStatus_APPEND_EVENT_STATUS_APPENDED {
						b.Error(resp.GetResults()[size-1])
						return
					}
				}
			})
			b.ReportMetric(float64(b.N*size)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// BenchmarkQuery measures QueryEvents latency over a window of 20,000
// events: the newest page of 100, and a page of a filter matching one
// event in 100.
func BenchmarkQuery(b *testing.B) {
	e, r := benchEnv(b)
	policy := e.as(b, r, e.service(b, devca.ServicePolicy))
	for range 40 {
		req := &auditv1.AppendEventsRequest{}
		for j := range 500 {
			req.Events = append(req.Events, e.decision(b, fmt.Sprintf("client-%d", j%100), "search", auditv1.Decision_DECISION_ALLOW))
		}
		if _, err := policy.AppendEvents(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
	auditor := e.as(b, r, e.operator(b, devca.RoleAuditor))
	for name, req := range map[string]*auditv1.QueryEventsRequest{
		"newest-100":          {PageSize: 100},
		"client-filter-100":   {PageSize: 100, Filter: &auditv1.EventFilter{ClientIds: []string{"client-7"}}},
		"oldest-first-100":    {PageSize: 100, Order: auditv1.EventOrder_EVENT_ORDER_OLDEST_FIRST},
		"sequence-range-1000": {PageSize: 1000, SequenceRange: &auditv1.SequenceRange{FromSequence: 5000, ThroughSequence: 5999}},
	} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				resp, err := auditor.QueryEvents(context.Background(), req)
				if err != nil || len(resp.GetEvents()) == 0 {
					b.Fatal(resp, err)
				}
			}
		})
	}
}
