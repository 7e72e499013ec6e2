package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/auditemit"
	"github.com/mcpid/mcpid/lib/etcdtest"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	"github.com/mcpid/mcpid/services/registration/server"
)

// env is the real registration service on loopback: real etcd, real mTLS
// identities from a test CA, the real HTTP edge.
type env struct {
	t    testing.TB
	etcd *etcdtest.Server
	cli  *clientv3.Client
	pki  *servicetest.PKI
	srv  servicetest.Runnable
	base string

	admin   registrationv1.RegistrationServiceClient
	auditor registrationv1.RegistrationServiceClient
	token   registrationv1.RegistrationServiceClient
	audit   registrationv1.RegistrationServiceClient
	policy  registrationv1.RegistrationServiceClient
	anon    registrationv1.RegistrationServiceClient
}

// newEnv starts the service with test defaults (no rate or duplicate
// limits unless mutate sets them) adjusted by mutate.
func newEnv(t testing.TB, mutate func(*server.Config)) *env {
	t.Helper()
	return newEnvWithPKI(t, servicetest.NewPKI(t), mutate)
}

// newEnvWithPKI is newEnv with a given test CA (for stand-ins of other
// services that must share it).
func newEnvWithPKI(t testing.TB, pki *servicetest.PKI, mutate func(*server.Config)) *env {
	t.Helper()
	e := &env{t: t, etcd: etcdtest.Start(t), pki: pki}
	e.cli = e.etcd.Client(t)
	cfg := server.Config{
		Flags:            e.pki.ServeTLS(t, server.Name, servicetest.Flags(e.etcd.Endpoints())),
		GatewayTLS:       e.pki.GatewayTLS(server.Name),
		DCRRatePerMinute: -1,
		DuplicateLimit:   -1,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := cfg.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, srv)
	e.srv = srv
	e.base = "http://" + srv.HTTPAddr().String()
	waitReady(t, e.base)
	e.admin = registrationv1.NewRegistrationServiceClient(e.pki.Dial(t, srv, server.Name, e.pki.AsOperator(t, "alice", "admin")))
	e.auditor = registrationv1.NewRegistrationServiceClient(e.pki.Dial(t, srv, server.Name, e.pki.AsOperator(t, "bob", "auditor")))
	e.token = registrationv1.NewRegistrationServiceClient(e.pki.Dial(t, srv, server.Name, e.pki.AsService(t, "token")))
	e.audit = registrationv1.NewRegistrationServiceClient(e.pki.Dial(t, srv, server.Name, e.pki.AsService(t, "audit")))
	e.policy = registrationv1.NewRegistrationServiceClient(e.pki.Dial(t, srv, server.Name, e.pki.AsService(t, "policy")))
	e.anon = registrationv1.NewRegistrationServiceClient(e.pki.Dial(t, srv, server.Name, nil))
	return e
}

// waitReady polls /readyz (gRPC is served over mTLS here, so the
// plaintext health check of servicetest.WaitReady does not apply).
func waitReady(t testing.TB, base string) {
	t.Helper()
	eventually(t, 30*time.Second, "/readyz", func() bool {
		code, _ := servicetest.HTTP(t, http.MethodGet, base+"/readyz", "", "")
		return code == http.StatusOK
	})
}

func tctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// response is one HTTP answer.
type response struct {
	code   int
	header http.Header
	body   string
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		t.Fatalf("response is not a JSON object: %q", r.body)
	}
	return m
}

// do sends one HTTP request to the service.
func (e *env) do(t testing.TB, method, path, bearer, body string, header ...string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(tctx(t), method, e.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

// register posts body to /oauth2/register and wants 201.
func (e *env) register(t testing.TB, body string, header ...string) map[string]any {
	t.Helper()
	r := e.do(t, http.MethodPost, "/oauth2/register", "", body, header...)
	if r.code != http.StatusCreated {
		t.Fatalf("register %s = %d %s", body, r.code, r.body)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("Cache-Control = %q", r.header.Get("Cache-Control"))
	}
	return r.json(t)
}

// wantOAuthError checks an RFC 6749/7591 error answer.
func wantOAuthError(t testing.TB, r response, code int, rfcError string) {
	t.Helper()
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if r.code != code || json.Unmarshal([]byte(r.body), &body) != nil || body.Error != rfcError {
		t.Fatalf("got %d %s, want %d error %q", r.code, r.body, code, rfcError)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("error without no-store: %q", r.header.Get("Cache-Control"))
	}
}

// wantStatus checks a gRPC error's code and ErrorInfo reason.
func wantStatus(t testing.TB, err error, code codes.Code, reason string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("err = %v, want %v", err, code)
	}
	info := apierr.Info(err)
	got := info.GetReason()
	if info.GetDomain() == apierr.DomainOAuth {
		got = info.GetMetadata()["mcpid_reason"]
	}
	if reason != "" && got != reason {
		t.Fatalf("err = %v (reason %q), want reason %q", err, got, reason)
	}
}

// events returns the events waiting in the service's outbox, in order.
func (e *env) events(t testing.TB) []*auditv1.Event {
	t.Helper()
	p, err := auditemit.OutboxPrefix(server.Name)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.cli.Get(tctx(t), p.String(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var out []*auditv1.Event
	for _, kv := range resp.Kvs {
		ev := &auditv1.Event{}
		if err := proto.Unmarshal(kv.Value, ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// eventsFor filters events about client of type typ.
func (e *env) eventsFor(t testing.TB, clientID string, typ auditv1.EventType) []*auditv1.Event {
	t.Helper()
	var out []*auditv1.Event
	for _, ev := range e.events(t) {
		if ev.GetClientId() == clientID && ev.GetType() == typ {
			out = append(out, ev)
		}
	}
	return out
}

// keys lists the etcd keys under the service prefix that contain part.
func (e *env) keys(t testing.TB, part string) []string {
	t.Helper()
	resp, err := e.cli.Get(tctx(t), "/mcpid/registration/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Key), part) {
			out = append(out, string(kv.Key))
		}
	}
	return out
}

// eventually polls cond for at most limit.
func eventually(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func strs(m map[string]any, k string) []string {
	var out []string
	for _, v := range m[k].([]any) {
		out = append(out, v.(string))
	}
	return out
}

// clock is real time plus an offset a test can advance.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time               { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration)      { c.offset.Add(int64(d)) }
func withClock(c *clock) func(*server.Config) { return func(cfg *server.Config) { cfg.Now = c.Now } }
