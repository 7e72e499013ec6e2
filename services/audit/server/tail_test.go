package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/devca"
)

// tailer reads a TailEvents stream into a channel.
type tailer struct {
	cancel context.CancelFunc
	msgs   chan *auditv1.TailEventsResponse
	errc   chan error
}

func tail(t *testing.T, c auditv1.AuditServiceClient, req *auditv1.TailEventsRequest) *tailer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := c.TailEvents(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	tl := &tailer{cancel: cancel, msgs: make(chan *auditv1.TailEventsResponse, 1000), errc: make(chan error, 1)}
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				tl.errc <- err
				return
			}
			tl.msgs <- m
		}
	}()
	return tl
}

// events receives until n events arrived (progress messages noted in last).
func (tl *tailer) events(t *testing.T, n int) []*auditv1.Event {
	t.Helper()
	var out []*auditv1.Event
	timeout := time.After(waitLimit)
	for len(out) < n {
		select {
		case m := <-tl.msgs:
			if ev := m.GetEvent(); ev != nil {
				out = append(out, ev)
			}
		case err := <-tl.errc:
			t.Fatalf("stream ended after %d of %d events: %v", len(out), n, err)
		case <-timeout:
			t.Fatalf("received %d of %d events", len(out), n)
		}
	}
	return out
}

// live waits for the progress message that says the backlog is replayed.
func (tl *tailer) live(t *testing.T) *auditv1.TailProgress {
	t.Helper()
	timeout := time.After(waitLimit)
	for {
		select {
		case m := <-tl.msgs:
			if p := m.GetProgress(); p.GetLive() {
				return p
			}
		case err := <-tl.errc:
			t.Fatalf("stream ended: %v", err)
		case <-timeout:
			t.Fatal("no live progress message")
		}
	}
}

func contiguous(t *testing.T, evs []*auditv1.Event, after uint64) {
	t.Helper()
	for i, ev := range evs {
		if ev.GetSequence() != after+uint64(i)+1 {
			t.Fatalf("event %d has sequence %d after %d: gap or duplicate", i, ev.GetSequence(), after)
		}
	}
}

// Done when: Tail sees everything appended after subscription across a
// forced reconnect with no gap or duplicate.
func TestTailResumesWithoutGapOrDuplicate(t *testing.T) {
	e := newEnv(t)
	a, b := e.start(t, nil), e.start(t, nil)
	policy := e.as(t, a, e.service(t, devca.ServicePolicy))
	auditorA := e.as(t, a, e.operator(t, devca.RoleAuditor))
	auditorB := e.as(t, b, e.operator(t, devca.RoleAuditor))
	settled(t, auditorA)
	batch := func(n int) {
		var evs []*auditv1.Event
		for i := range n {
			evs = append(evs, e.decision(t, "c1", fmt.Sprintf("t%d", i), auditv1.Decision_DECISION_DENY))
		}
		appendOK(t, policy, evs...)
	}
	batch(3) // before the subscription: not sent to a live-only tail

	tl := tail(t, auditorB, &auditv1.TailEventsRequest{})
	start := tl.live(t).GetSequence()
	batch(4)
	batch(4)
	got := tl.events(t, 8)
	contiguous(t, got, start)
	last := got[len(got)-1].GetSequence()

	// The client drops the stream; events keep coming; it resumes.
	tl.cancel()
	batch(5)
	tl = tail(t, auditorB, &auditv1.TailEventsRequest{Start: &auditv1.TailEventsRequest_AfterSequence{AfterSequence: last}})
	batch(2)
	got = tl.events(t, 7)
	contiguous(t, got, last)
	last = got[len(got)-1].GetSequence()

	// The replica serving the stream shuts down: the client resumes on the
	// other one from the last event it received.
	b.stop()
	select {
	case err := <-tl.errc:
		if err == nil {
			t.Fatal("stream ended without an error")
		}
	case <-time.After(waitLimit):
		t.Fatal("the stream did not end when its replica stopped")
	}
	batch(3)
	tl = tail(t, auditorA, &auditv1.TailEventsRequest{Start: &auditv1.TailEventsRequest_AfterEventId{AfterEventId: got[len(got)-1].GetId()}})
	batch(3)
	got = tl.events(t, 6)
	contiguous(t, got, last)
	select {
	case m := <-tl.msgs:
		if m.GetEvent() != nil {
			t.Fatalf("unexpected extra event %d", m.GetEvent().GetSequence())
		}
	default:
	}
}

func TestTailFilterAndProgress(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, nil)
	policy := e.as(t, r, e.service(t, devca.ServicePolicy))
	auditor := e.as(t, r, e.operator(t, devca.RoleAuditor))
	settled(t, auditor)
	appendOK(t, policy, e.decision(t, "c1", "a", auditv1.Decision_DECISION_ALLOW), e.decision(t, "c2", "b", auditv1.Decision_DECISION_DENY))
	tl := tail(t, auditor, &auditv1.TailEventsRequest{
		Start:  &auditv1.TailEventsRequest_AfterSequence{AfterSequence: 0},
		Filter: &auditv1.EventFilter{Decision: auditv1.Decision_DECISION_DENY},
	})
	got := tl.events(t, 1)
	if got[0].GetClientId() != "c2" {
		t.Fatalf("filtered tail sent %v", got[0])
	}
	p := tl.live(t)
	head := verifyChain(t, auditor, nil).GetHeadSequence()
	if p.GetSequence() != head || p.GetAppendTime() == nil {
		t.Fatalf("progress %v, want the head %d", p, head)
	}
}

func TestTailResumeErrors(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, nil)
	auditor := e.as(t, r, e.operator(t, devca.RoleAuditor))
	cases := []struct {
		name   string
		req    *auditv1.TailEventsRequest
		code   codes.Code
		reason auditv1.ErrorReason
	}{
		{"ahead of the head", &auditv1.TailEventsRequest{Start: &auditv1.TailEventsRequest_AfterSequence{AfterSequence: 1000}},
			codes.OutOfRange, auditv1.ErrorReason_ERROR_REASON_RESUME_POINT_AHEAD},
		{"unknown id", &auditv1.TailEventsRequest{Start: &auditv1.TailEventsRequest_AfterEventId{AfterEventId: e.id(t)}},
			codes.NotFound, auditv1.ErrorReason_ERROR_REASON_EVENT_NOT_FOUND},
		{"malformed id", &auditv1.TailEventsRequest{Start: &auditv1.TailEventsRequest_AfterEventId{AfterEventId: "nope"}},
			codes.InvalidArgument, auditv1.ErrorReason_ERROR_REASON_INVALID_FIELD},
		{"bad filter", &auditv1.TailEventsRequest{Filter: &auditv1.EventFilter{TraceId: "xyz"}},
			codes.InvalidArgument, auditv1.ErrorReason_ERROR_REASON_INVALID_FIELD},
	}
	for _, c := range cases {
		stream, err := auditor.TailEvents(testCtx(t), c.req)
		if err == nil {
			_, err = stream.Recv()
		}
		wantErr(t, c.name, err, c.code, c.reason)
	}
	stream, err := e.as(t, r, e.service(t, devca.ServiceToken)).TailEvents(testCtx(t), &auditv1.TailEventsRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	wantErr(t, "a service tailing", err, codes.PermissionDenied, auditv1.ErrorReason_ERROR_REASON_CALLER_NOT_ALLOWED)
}
