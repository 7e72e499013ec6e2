package revocation_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/etcdstore"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/services/token/internal/revocation"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// TestWatchQuietStreamSendsProgress: a watch over a feed nobody writes to
// still delivers progress messages — one when it is established, then one
// at least every progress interval — so that followers (whose watchdog
// reopens a stream silent for 15 s) stay ready. Nothing at all is written
// meanwhile: etcd itself answers no progress request then (a watch from
// "now" starts one revision ahead of the store).
func TestWatchQuietStreamSendsProgress(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	prefix, err := etcdstore.NewPrefix("token")
	if err != nil {
		t.Fatal(err)
	}
	feed := revocation.NewFeed(cli, prefix.Sub("revocations"), nil, 100*time.Millisecond)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	msgs := make(chan *tokenv1.WatchRevocationsResponse, 64)
	done := make(chan error, 1)
	go func() {
		done <- feed.Watch(ctx, 0, "", func(m *tokenv1.WatchRevocationsResponse) error {
			select {
			case msgs <- m:
			default: // the test reads fast enough; never block the feed
			}
			return nil
		})
	}()

	deadline := time.After(10 * time.Second)
	var got []*tokenv1.WatchRevocationsResponse
	for len(got) < 4 {
		select {
		case m := <-msgs:
			if len(m.GetRevocations()) != 0 {
				t.Fatalf("quiet feed sent revocations: %v", m)
			}
			got = append(got, m)
		case err := <-done:
			t.Fatalf("watch ended: %v", err)
		case <-deadline:
			t.Fatalf("quiet watch sent %d progress messages within 10s, want at least 4 (one at start, then one per interval)", len(got))
		}
	}
	for i := 1; i < len(got); i++ {
		if got[i].GetRevision() < got[i-1].GetRevision() {
			t.Errorf("progress revision went back: %d after %d", got[i].GetRevision(), got[i-1].GetRevision())
		}
	}

	// A revocation written now still arrives, after the quiet spell.
	rec, err := json.Marshal(&store.Revocation{Kind: store.RevokeGrant, ID: "g1", Resource: "https://mcp.example.com", Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	put, err := cli.Put(ctx, string(prefix.Sub("revocations"))+"g1", string(rec))
	if err != nil {
		t.Fatal(err)
	}
	deadline = time.After(10 * time.Second)
	for {
		select {
		case m := <-msgs:
			if len(m.GetRevocations()) == 0 {
				continue
			}
			if m.GetRevision() != put.Header.Revision || m.GetRevocations()[0].GetId() != "g1" {
				t.Fatalf("revocation message = %v, want g1 at revision %d", m, put.Header.Revision)
			}
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Fatalf("watch ended with %v", err)
			}
			return
		case err := <-done:
			t.Fatalf("watch ended: %v", err)
		case <-deadline:
			t.Fatal("the revocation did not arrive within 10s")
		}
	}
}
