package server_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/lib/etcdstore"
)

// switchAppender is the real audit client of the current replica (what a
// load balancer in front of audit replicas gives a relay), and it can
// crash its relay right after audit answered, before the relay deletes
// anything: the worst moment for exactly-once.
type switchAppender struct {
	cur       atomic.Pointer[auditv1.AuditServiceClient]
	mu        sync.Mutex
	crashNext func() // when set, the next successful call runs it and fails
}

func (s *switchAppender) set(c auditv1.AuditServiceClient) { s.cur.Store(&c) }

func (s *switchAppender) AppendEvents(ctx context.Context, in *auditv1.AppendEventsRequest, opts ...grpc.CallOption) (*auditv1.AppendEventsResponse, error) {
	resp, err := (*s.cur.Load()).AppendEvents(ctx, in, opts...)
	s.mu.Lock()
	crash := s.crashNext
	if err == nil && crash != nil {
		s.crashNext = nil
	}
	s.mu.Unlock()
	if err == nil && crash != nil {
		crash()
		return nil, errors.New("relay crashed after audit answered")
	}
	return resp, err
}

func runRelay(t *testing.T, cli *clientv3.Client, app auditemit.Appender) (stop func()) {
	t.Helper()
	relay, err := auditemit.NewRelay(auditemit.RelayConfig{
		Client: cli, Service: devca.ServiceRegistration, Appender: app,
		MaxBatchEvents: 7, MinBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		CallTimeout: 5 * time.Second, ResyncInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = relay.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

// Done when: the relay delivers every outbox event exactly once to the
// chain across a relay crash and an audit restart.
func TestRelayDeliversExactlyOnceAcrossCrashes(t *testing.T) {
	e := newEnv(t)
	cli := e.etcd.Client(t)
	outbox, err := auditemit.NewOutbox(auditemit.OutboxConfig{Service: devca.ServiceRegistration})
	if err != nil {
		t.Fatal(err)
	}
	st := etcdstore.New(cli)
	clients := etcdstore.MustPrefix("registration").Sub("clients")
	var ids []string
	// write makes n state changes, each with its event in its transaction.
	write := func(n int) {
		for range n {
			ev := e.registered(t, fmt.Sprintf("client-%d", len(ids)), "agent")
			ev.Id = "" // the outbox stamps it, in the transaction
			op, err := outbox.Op(testCtx(t), ev)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Create(testCtx(t), clients.Key(ev.GetClientId()), []byte("client"), op); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, ev.GetId())
		}
	}
	outboxLen := func() int64 {
		resp, err := cli.Get(testCtx(t), outbox.Prefix().String(), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}

	a := e.start(t, nil)
	app := &switchAppender{}
	app.set(e.as(t, a, e.service(t, devca.ServiceRegistration)))
	write(30)

	// Relay 1 crashes right after audit chained its second batch.
	calls := 0
	var stop1 func()
	crashed := make(chan struct{})
	wrapped := appenderFunc(func(ctx context.Context, in *auditv1.AppendEventsRequest, opts ...grpc.CallOption) (*auditv1.AppendEventsResponse, error) {
		calls++
		if calls == 2 {
			app.mu.Lock()
			app.crashNext = func() { close(crashed) }
			app.mu.Unlock()
		}
		return app.AppendEvents(ctx, in, opts...)
	})
	stop1 = runRelay(t, cli, wrapped)
	select {
	case <-crashed:
	case <-time.After(waitLimit):
		t.Fatal("relay 1 never reached its crash")
	}
	stop1()
	if n := outboxLen(); n == 0 || n == 30 {
		t.Fatalf("after the crash the outbox holds %d events; want some delivered and some not", n)
	}

	// Relay 2 takes over; audit restarts under it while more changes come.
	runRelay(t, cli, app)
	write(10)
	a.stop()
	write(10) // audit is down: these wait in the outbox
	b := e.start(t, nil)
	app.set(e.as(t, b, e.service(t, devca.ServiceRegistration)))
	write(10)
	eventually(t, "an empty outbox", func() bool { return outboxLen() == 0 })

	evs := producedEvents(t, e.as(t, b, e.operator(t, devca.RoleAuditor)))
	count := map[string]int{}
	for _, ev := range evs {
		count[ev.GetId()]++
	}
	for _, id := range ids {
		if count[id] != 1 {
			t.Fatalf("event %s chained %d times", id, count[id])
		}
	}
	if len(evs) != len(ids) {
		t.Fatalf("chain holds %d produced events, outbox had %d", len(evs), len(ids))
	}
	dead, err := cli.Get(testCtx(t), "/mcpid/registration/outbox-dead/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || dead.Count != 0 {
		t.Fatalf("dead letters: %v %v", dead, err)
	}
	if v := verifyChain(t, e.as(t, b, e.operator(t, devca.RoleAuditor)), nil); !v.GetIntact() {
		t.Fatalf("verify: %v", v.GetFirstBreak())
	}
}

type appenderFunc func(ctx context.Context, in *auditv1.AppendEventsRequest, opts ...grpc.CallOption) (*auditv1.AppendEventsResponse, error)

func (f appenderFunc) AppendEvents(ctx context.Context, in *auditv1.AppendEventsRequest, opts ...grpc.CallOption) (*auditv1.AppendEventsResponse, error) {
	return f(ctx, in, opts...)
}

// The batched emitter in strict mode gets every event acknowledged.
func TestBatcherDelivers(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, nil)
	b, err := auditemit.NewBatcher(auditemit.BatcherConfig{Appender: e.as(t, r, e.service(t, devca.ServicePolicy)), Service: devca.ServicePolicy, Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- b.Emit(testCtx(t), e.decision(t, "c1", fmt.Sprintf("t%d", i), auditv1.Decision_DECISION_ALLOW))
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if n := len(producedEvents(t, e.as(t, r, e.operator(t, devca.RoleAuditor)))); n != 40 {
		t.Fatalf("%d events chained, want 40", n)
	}
}
