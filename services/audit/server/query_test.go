package server_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/devca"
)

func TestQueryFiltersAndPages(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, nil)
	policy := e.as(t, r, e.service(t, devca.ServicePolicy))
	token := e.as(t, r, e.service(t, devca.ServiceToken))
	auditor := e.as(t, r, e.operator(t, devca.RoleAuditor))

	traced := e.decision(t, "c2", "delete", auditv1.Decision_DECISION_DENY)
	traced.TraceId, traced.GrantId = "4bf92f3577b34da6a3ce929d0e0e4736", "grt_1"
	old := e.login(t, "alice", "c1")
	old.Time = timestamppb.New(time.Now().Add(-48 * time.Hour)) // an outbox drained late
	appendOK(t, policy, e.decision(t, "c1", "search", auditv1.Decision_DECISION_ALLOW), e.decision(t, "c1", "delete", auditv1.Decision_DECISION_DENY), traced)
	appendOK(t, token, e.login(t, "alice", "c1"), e.login(t, "bob", "c2"), old)

	count := func(f *auditv1.EventFilter, tr *auditv1.TimeRange) int {
		t.Helper()
		resp, err := auditor.QueryEvents(testCtx(t), &auditv1.QueryEventsRequest{Filter: f, TimeRange: tr})
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.GetEvents())
	}
	day := time.Now().Add(-24 * time.Hour)
	for name, c := range map[string]struct {
		f    *auditv1.EventFilter
		tr   *auditv1.TimeRange
		want int
	}{
		"everything produced":    {f: &auditv1.EventFilter{SourceServices: []auditv1.SourceService{auditv1.SourceService_SOURCE_SERVICE_POLICY, auditv1.SourceService_SOURCE_SERVICE_TOKEN}}, want: 6},
		"type":                   {f: &auditv1.EventFilter{Types: []auditv1.EventType{auditv1.EventType_EVENT_TYPE_LOGIN_SUCCEEDED}}, want: 3},
		"client":                 {f: &auditv1.EventFilter{ClientIds: []string{"c2"}}, want: 2},
		"user":                   {f: &auditv1.EventFilter{UserIds: []string{"alice", "carol"}}, want: 2},
		"resource canonicalized": {f: &auditv1.EventFilter{Resources: []string{"HTTPS://MCP.example.test:443"}}, want: 3},
		"tool and decision":      {f: &auditv1.EventFilter{Tools: []string{"delete"}, Decision: auditv1.Decision_DECISION_DENY}, want: 2},
		"decision allow":         {f: &auditv1.EventFilter{Decision: auditv1.Decision_DECISION_ALLOW}, want: 1},
		"actor kind":             {f: &auditv1.EventFilter{ActorKinds: []auditv1.ActorKind{auditv1.ActorKind_ACTOR_KIND_USER}, ActorIds: []string{"bob"}}, want: 1},
		"trace":                  {f: &auditv1.EventFilter{TraceId: traced.GetTraceId()}, want: 1},
		"grant":                  {f: &auditv1.EventFilter{GrantIds: []string{"grt_1"}}, want: 1},
		"fields AND":             {f: &auditv1.EventFilter{ClientIds: []string{"c1"}, Types: []auditv1.EventType{auditv1.EventType_EVENT_TYPE_LOGIN_SUCCEEDED}}, want: 2},
		"time range: old only":   {f: &auditv1.EventFilter{ClientIds: []string{"c1"}}, tr: &auditv1.TimeRange{EndTime: timestamppb.New(day)}, want: 1},
		"time range: recent":     {f: &auditv1.EventFilter{ClientIds: []string{"c1"}}, tr: &auditv1.TimeRange{StartTime: timestamppb.New(day)}, want: 3},
	} {
		if got := count(c.f, c.tr); got != c.want {
			t.Errorf("%s: %d events, want %d", name, got, c.want)
		}
	}

	// Pages of 2, newest first, with a token bound to the filter.
	f := &auditv1.EventFilter{SourceServices: []auditv1.SourceService{auditv1.SourceService_SOURCE_SERVICE_POLICY, auditv1.SourceService_SOURCE_SERVICE_TOKEN}}
	var seqs []uint64
	tok := ""
	for range 10 {
		resp, err := auditor.QueryEvents(testCtx(t), &auditv1.QueryEventsRequest{Filter: f, PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetEvents()) > 2 || resp.GetHeadSequence() == 0 || resp.GetOldestRetainedSequence() != 1 || resp.GetOldestRetainedTime() == nil {
			t.Fatalf("page: %v", resp)
		}
		for _, ev := range resp.GetEvents() {
			seqs = append(seqs, ev.GetSequence())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
		if tok != "" && len(seqs) == 2 {
			_, err := auditor.QueryEvents(testCtx(t), &auditv1.QueryEventsRequest{PageSize: 2, PageToken: tok})
			wantErr(t, "token with another filter", err, codes.InvalidArgument, auditv1.ErrorReason_ERROR_REASON_PAGE_TOKEN_INVALID)
		}
	}
	if len(seqs) != 6 {
		t.Fatalf("paged through %d events, want 6", len(seqs))
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] >= seqs[i-1] {
			t.Fatalf("not newest first: %v", seqs)
		}
	}
	resp, err := auditor.QueryEvents(testCtx(t), &auditv1.QueryEventsRequest{
		SequenceRange: &auditv1.SequenceRange{FromSequence: seqs[4], ThroughSequence: seqs[1]}, Order: auditv1.EventOrder_EVENT_ORDER_OLDEST_FIRST})
	if err != nil || len(resp.GetEvents()) != int(seqs[1]-seqs[4]+1) || resp.GetEvents()[0].GetSequence() != seqs[4] {
		t.Fatalf("sequence range: %v %v", resp, err)
	}

	many := make([]string, 51)
	for i := range many {
		many[i] = "c"
	}
	for name, req := range map[string]*auditv1.QueryEventsRequest{
		"too many values":  {Filter: &auditv1.EventFilter{ClientIds: many}},
		"unknown type":     {Filter: &auditv1.EventFilter{Types: []auditv1.EventType{999}}},
		"bad resource":     {Filter: &auditv1.EventFilter{Resources: []string{"not a uri"}}},
		"bad trace id":     {Filter: &auditv1.EventFilter{TraceId: strings.Repeat("Z", 32)}},
		"inverted times":   {TimeRange: &auditv1.TimeRange{StartTime: timestamppb.Now(), EndTime: timestamppb.New(day)}},
		"inverted range":   {SequenceRange: &auditv1.SequenceRange{FromSequence: 5, ThroughSequence: 1}},
		"negative page":    {PageSize: -1},
		"unknown order":    {Order: 7},
		"malformed token*": {PageToken: "!!!"},
	} {
		_, err := auditor.QueryEvents(testCtx(t), req)
		want := auditv1.ErrorReason_ERROR_REASON_INVALID_FIELD
		if strings.HasSuffix(name, "*") {
			want = auditv1.ErrorReason_ERROR_REASON_PAGE_TOKEN_INVALID
		}
		wantErr(t, name, err, codes.InvalidArgument, want)
	}
}
