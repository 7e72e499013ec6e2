package revocationfeed

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
)

// fakeSource stands in for the token service, which lives in another module
// (lib must not import services); the real feed is tested end to end in
// services/token/server. Each Watch call takes the next scripted stream.
type fakeSource struct {
	mu      sync.Mutex
	list    []*tokenv1.Revocation
	listRev int64
	lists   int
	watches []int64 // start revisions asked for
	streams [][]any // *tokenv1.WatchRevocationsResponse or error
}

func (f *fakeSource) ListRevocations(context.Context, *tokenv1.ListRevocationsRequest, ...grpc.CallOption) (*tokenv1.ListRevocationsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	return &tokenv1.ListRevocationsResponse{Revocations: f.list, Revision: f.listRev}, nil
}

func (f *fakeSource) WatchRevocations(ctx context.Context, in *tokenv1.WatchRevocationsRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[tokenv1.WatchRevocationsResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watches = append(f.watches, in.GetStartRevision())
	var script []any
	if len(f.streams) > 0 {
		script, f.streams = f.streams[0], f.streams[1:]
	}
	return &fakeStream{ctx: ctx, script: script}, nil
}

type fakeStream struct {
	grpc.ClientStream
	ctx    context.Context
	script []any
}

func (s *fakeStream) Recv() (*tokenv1.WatchRevocationsResponse, error) {
	if len(s.script) == 0 {
		<-s.ctx.Done()
		return nil, io.EOF
	}
	next := s.script[0]
	s.script = s.script[1:]
	if err, ok := next.(error); ok {
		return nil, err
	}
	return next.(*tokenv1.WatchRevocationsResponse), nil
}

func rev(kind tokenv1.RevocationKind, id string, before time.Time) *tokenv1.Revocation {
	r := &tokenv1.Revocation{Kind: kind, Id: id, ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}
	if !before.IsZero() {
		r.IssuedBefore = timestamppb.New(before)
	}
	return r
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFollowerListsResumesAndRelists(t *testing.T) {
	now := time.Now()
	src := &fakeSource{
		list:    []*tokenv1.Revocation{rev(tokenv1.RevocationKind_REVOCATION_KIND_GRANT, "g1", time.Time{})},
		listRev: 10,
		streams: [][]any{
			{&tokenv1.WatchRevocationsResponse{Revision: 10},
				&tokenv1.WatchRevocationsResponse{Revision: 12, Revocations: []*tokenv1.Revocation{rev(tokenv1.RevocationKind_REVOCATION_KIND_USER, "u1", now)}},
				status.Error(codes.Unavailable, "connection lost")},
			// Resumed from 13: misses nothing.
			{&tokenv1.WatchRevocationsResponse{Revision: 14, Revocations: []*tokenv1.Revocation{rev(tokenv1.RevocationKind_REVOCATION_KIND_CLIENT, "c1", now)}},
				status.Error(codes.OutOfRange, "compacted")},
			// After a re-list: an unknown kind fails closed into another list.
			{&tokenv1.WatchRevocationsResponse{Revision: 20, Revocations: []*tokenv1.Revocation{{Kind: 99, Id: "x"}}}},
		},
	}
	f, err := New(Config{Source: src, MaxSilence: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if f.Ready() || !f.Revoked(Token{GrantID: "other"}) {
		t.Fatal("before the first listing the follower must be unready and fail closed")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	waitFor(t, "revision 14", func() bool { return f.Revision() >= 14 })
	if !f.Ready() || !f.Revoked(Token{GrantID: "g1"}) || f.Revoked(Token{GrantID: "g2"}) {
		t.Fatal("grant entry of the listing")
	}
	if !f.Revoked(Token{Subject: "u1", IssuedAt: now.Add(-time.Second)}) || f.Revoked(Token{Subject: "u1", IssuedAt: now}) {
		t.Fatal("user watermark: strictly before")
	}
	if !f.Revoked(Token{ClientID: "c1", IssuedAt: now.Add(-time.Second)}) {
		t.Fatal("client watermark streamed after the resume")
	}
	waitFor(t, "three listings", func() bool { src.mu.Lock(); defer src.mu.Unlock(); return src.lists >= 3 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if len(src.watches) < 3 || src.watches[0] != 11 || src.watches[1] != 13 || src.watches[2] != 11 {
		t.Fatalf("watch start revisions %v, want 11 (after list), 13 (resume), 11 (after re-list)", src.watches)
	}
}

func TestFollowerUnreadyWhenSilent(t *testing.T) {
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	src := &fakeSource{listRev: 5}
	f, err := New(Config{Source: src, MaxSilence: time.Hour, Now: now, Resource: "https://mcp.example.com/crm"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = f.Run(ctx) }()
	waitFor(t, "ready", f.Ready)
	mu.Lock()
	clock = clock.Add(2 * time.Hour)
	mu.Unlock()
	if f.Ready() {
		t.Fatal("a silent feed must not be ready")
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer wcancel()
	if err := f.WaitForRevision(wctx, 6); err == nil {
		t.Fatal("WaitForRevision returned before the revision")
	}
}

func TestNewNeedsSource(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without a Source succeeded")
	}
}
