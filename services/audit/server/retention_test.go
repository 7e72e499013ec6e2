package server_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/services/audit/internal/chain"
	"github.com/mcpid/mcpid/services/audit/server"
)

// readSink parses every ArchiveRecord of the sink, in file (sequence) order.
func readSink(t *testing.T, dir string) ([]*auditv1.Event, []*auditv1.Checkpoint) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "audit-*.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	var evs []*auditv1.Event
	var cps []*auditv1.Checkpoint
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			rec := &auditv1.ArchiveRecord{}
			if err := protojson.Unmarshal(sc.Bytes(), rec); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if ev := rec.GetEvent(); ev != nil {
				evs = append(evs, ev)
			} else {
				cps = append(cps, rec.GetCheckpoint())
			}
		}
	}
	return evs, cps
}

func TestRetentionMovesOldEventsToTheSink(t *testing.T) {
	e := newEnv(t)
	sink := t.TempDir()
	r := e.start(t, func(c *server.Config) {
		c.ArchiveDir = sink
		c.RetentionMaxBytes = 24 << 10
		c.RetentionInterval = 50 * time.Millisecond
	})
	policy := e.as(t, r, e.service(t, devca.ServicePolicy))
	auditor := e.as(t, r, e.operator(t, devca.RoleAuditor))
	var sent []*auditv1.Event
	for i := range 12 {
		var evs []*auditv1.Event
		for j := range 10 {
			evs = append(evs, e.decision(t, "c1", fmt.Sprintf("tool-%d-%d", i, j), auditv1.Decision_DECISION_ALLOW))
		}
		appendOK(t, policy, evs...)
		sent = append(sent, evs...)
	}
	// Retention runs every 50 ms until etcd holds less than the limit: wait
	// until it has moved past event 40 AND settled (the same window over
	// several passes), so the checks below see one state, not a moving one.
	var oldest, seen uint64
	eventually(t, "events archived and retention settled", func() bool {
		resp, err := auditor.QueryEvents(testCtx(t), &auditv1.QueryEventsRequest{PageSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		prev := seen
		seen = resp.GetOldestRetainedSequence()
		if seen <= 40 || seen != prev {
			time.Sleep(300 * time.Millisecond) // several retention passes
			return false
		}
		oldest = seen
		return true
	})

	// The sink holds 1..oldest-1, verifiable offline with the same
	// algorithm, checkpoints after the events they sign; etcd holds the rest.
	archived, cps := readSink(t, sink)
	if len(archived) < int(oldest-1) {
		t.Fatalf("sink holds %d events, oldest retained is %d", len(archived), oldest)
	}
	var prev []byte
	for i, ev := range archived {
		if brk, _ := chain.CheckEvent(ev, uint64(i+1), prev); brk != nil {
			t.Fatalf("offline verification of the sink: %v", brk)
		}
		prev = ev.GetHash()
	}
	if len(cps) == 0 {
		t.Fatal("no checkpoint in the sink")
	}
	retained := allEvents(t, auditor)
	if retained[0].GetSequence() != oldest || !bytes.Equal(retained[0].GetPrevHash(), archived[oldest-2].GetHash()) {
		t.Fatalf("the window starts at %d, linked to %x", retained[0].GetSequence(), retained[0].GetPrevHash())
	}
	v := verifyChain(t, auditor, nil)
	if !v.GetIntact() || v.GetFromSequence() != oldest || v.GetOldestRetainedSequence() != oldest {
		t.Fatalf("verify the window: %v", v)
	}

	// An archived event sent again is still recognised.
	res, err := policy.AppendEvents(testCtx(t), &auditv1.AppendEventsRequest{Events: []*auditv1.Event{proto.Clone(sent[0]).(*auditv1.Event)}})
	if err != nil || res.GetResults()[0].GetStatus() != auditv1.AppendEventStatus_APPEND_EVENT_STATUS_DUPLICATE ||
		!bytes.Equal(res.GetResults()[0].GetHash(), archived[sent0Index(archived, sent[0].GetId())].GetHash()) {
		t.Fatalf("archived event resent: %v %v", res, err)
	}

	// Tails cannot resume inside the sink without being told.
	stream, err := auditor.TailEvents(testCtx(t), &auditv1.TailEventsRequest{Start: &auditv1.TailEventsRequest_AfterSequence{AfterSequence: 1}})
	if err == nil {
		_, err = stream.Recv()
	}
	wantErr(t, "resume inside the sink", err, codes.OutOfRange, auditv1.ErrorReason_ERROR_REASON_RESUME_POINT_NOT_RETAINED)
	stream, err = auditor.TailEvents(testCtx(t), &auditv1.TailEventsRequest{Start: &auditv1.TailEventsRequest_AfterEventId{AfterEventId: sent[0].GetId()}})
	if err == nil {
		_, err = stream.Recv()
	}
	wantErr(t, "resume after an archived id", err, codes.OutOfRange, auditv1.ErrorReason_ERROR_REASON_RESUME_POINT_NOT_RETAINED)
	tl := tail(t, auditor, &auditv1.TailEventsRequest{Start: &auditv1.TailEventsRequest_AfterSequence{AfterSequence: 0}})
	if got := tl.events(t, 1); got[0].GetSequence() < oldest {
		t.Fatalf("tail from the oldest retained started at %d", got[0].GetSequence())
	}
}

func sent0Index(evs []*auditv1.Event, id string) int {
	for i, ev := range evs {
		if ev.GetId() == id {
			return i
		}
	}
	return 0
}

// Without a sink nothing leaves etcd, and appends stop at the hard bound
// rather than filling etcd.
func TestRetentionBacklogFull(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, func(c *server.Config) { c.RetentionMaxBytes = 2 << 10 })
	policy := e.as(t, r, e.service(t, devca.ServicePolicy))
	var err error
	for range 50 {
		_, err = policy.AppendEvents(testCtx(t), &auditv1.AppendEventsRequest{Events: []*auditv1.Event{
			e.decision(t, "c1", "t", auditv1.Decision_DECISION_ALLOW), e.decision(t, "c1", "t", auditv1.Decision_DECISION_ALLOW),
		}})
		if err != nil {
			break
		}
	}
	wantErr(t, "window full", err, codes.ResourceExhausted, auditv1.ErrorReason_ERROR_REASON_RETENTION_BACKLOG_FULL)
}
