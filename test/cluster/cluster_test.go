package cluster

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
)

// The run, in time after the load starts. Bounded: the whole harness,
// start-up and checks included, stays well under five minutes on 2 cores.
const (
	leaderKillAt  = 8 * time.Second
	replicaKillAt = 22 * time.Second
	loadFor       = 40 * time.Second
	// faultWindow is how long after a kill client-visible failures are
	// tolerated (election, health flips, reconnects); outside both windows
	// every attempt must succeed.
	faultWindow = 10 * time.Second
	// Concurrent journeys of each kind.
	authWorkers    = 2
	machineWorkers = 2
	auditWorkers   = 1
)

func TestClusterScaleOutAndFaults(t *testing.T) {
	s := startSystem(t)
	ctx := t.Context()
	reg := registrationv1.NewRegistrationServiceClient(s.dial(t, "registration", s.operator))
	tok := tokenv1.NewTokenServiceClient(s.dial(t, "token", s.operator))
	polAdmin := policyv1.NewPolicyServiceClient(s.dial(t, "policy", s.operator))
	polMCP := policyv1.NewPolicyServiceClient(s.dial(t, "policy", s.mcp))
	aud := auditv1.NewAuditServiceClient(s.dial(t, "audit", s.operator))

	machineID, machineSecret := setupResource(t, reg, polAdmin, polMCP)
	edge := newOAuthClient(s.issuer)
	// The token service learns the catalogue through a watch: wait until a
	// machine token for the resource is issued.
	if !waitFor(ctx, 30*time.Second, func() bool {
		var l ledger
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return l.machineFlow(lctx, edge, machineID, machineSecret, polMCP) == nil
	}) {
		t.Fatal("machine client_credentials + Check never succeeded before the faults")
	}

	// Load, continuously, while the faults happen.
	var l ledger
	loadStart := time.Now()
	lctx, stopLoad := context.WithTimeout(ctx, loadFor)
	defer stopLoad()
	var wg sync.WaitGroup
	var flowErrs sync.Map
	worker := func(name string, f func(c *oauthClient) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newOAuthClient(s.issuer)
			for lctx.Err() == nil {
				if err := f(c); err != nil && lctx.Err() == nil {
					flowErrs.Store(name, err)
					return
				}
			}
		}()
	}
	for i := range authWorkers {
		worker(fmt.Sprintf("authcode-%d", i), func(c *oauthClient) error { return l.authCodeFlow(lctx, c) })
	}
	for i := range machineWorkers {
		worker(fmt.Sprintf("machine-%d", i), func(c *oauthClient) error {
			return l.machineFlow(lctx, c, machineID, machineSecret, polMCP)
		})
	}
	for i := range auditWorkers {
		worker(fmt.Sprintf("audit-%d", i), func(*oauthClient) error {
			return l.retry(lctx, "audit_query", func() error {
				qctx, cancel := context.WithTimeout(lctx, 10*time.Second) // a slow answer on 2 busy cores is not a fault
				defer cancel()
				_, err := aud.QueryEvents(qctx, &auditv1.QueryEventsRequest{PageSize: 50, Order: auditv1.EventOrder_EVENT_ORDER_NEWEST_FIRST})
				if err == nil {
					time.Sleep(100 * time.Millisecond)
				}
				return err
			})
		})
	}

	// Fault 1: SIGKILL the etcd leader, then measure the election.
	sleepUntil(lctx, loadStart.Add(leaderKillAt))
	leader, err := s.leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leaderKill := time.Now()
	s.etcd[leader].kill()
	var election time.Duration
	if waitFor(ctx, 30*time.Second, func() bool { i, err := s.leader(ctx); return err == nil && i != leader }) {
		election = time.Since(leaderKill)
	} else {
		t.Fatal("no new etcd leader within 30s of killing the old one")
	}
	t.Logf("killed etcd leader %s; new leader after %v", s.etcd[leader].name, election.Round(time.Millisecond))

	// Fault 2: SIGKILL one replica of every service.
	sleepUntil(lctx, loadStart.Add(replicaKillAt))
	replicaKill := time.Now()
	for _, name := range services {
		s.replicas[name][0].kill()
	}
	t.Logf("killed %s", strings.Join([]string{"audit-1", "policy-1", "registration-1", "token-1"}, ", "))

	wg.Wait()
	flowErrs.Range(func(k, v any) bool {
		t.Errorf("journey %s gave up: %v", k, v)
		return true
	})
	for _, p := range append(append([]*proc{}, s.etcd...), flatten(s.replicas)...) {
		if p.exited() {
			t.Errorf("%s exited by itself", p.name)
		}
	}

	f := figuresOf(&l, loadStart, leaderKill, replicaKill, election)
	checkWindows(t, &l, leaderKill, replicaKill)
	f.eventsChecked = checkAcknowledged(t, &l, reg, tok, aud, edge)
	t.Log(f.String())
	if out := os.Getenv("CLUSTER_FIGURES"); out != "" {
		if err := os.WriteFile(out, []byte(f.String()), 0o600); err != nil {
			t.Error(err)
		}
	}
}

func sleepUntil(ctx context.Context, at time.Time) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(at)):
	}
}

func flatten(m map[string][]*proc) []*proc {
	var out []*proc
	for _, name := range services {
		out = append(out, m[name]...)
	}
	return out
}

// setupResource publishes the resource's manifest (as the MCP server),
// an operator policy, and a machine client allowed client_credentials.
func setupResource(t *testing.T, reg registrationv1.RegistrationServiceClient, polAdmin, polMCP policyv1.PolicyServiceClient) (string, string) {
	t.Helper()
	ctx := t.Context()
	if _, err := polMCP.PublishManifest(ctx, &policyv1.PublishManifestRequest{Manifest: &policyv1.Manifest{
		Resource: resource, DisplayName: "Cluster CRM",
		Scopes: []*policyv1.Scope{{Name: "crm:read", Description: "Read your contacts"}, {Name: "crm:write", Description: "Change your deals"}},
		Tools:  []*policyv1.Tool{{Name: "list_contacts", RequiredScopes: []string{"crm:read"}}, {Name: "update_deal", RequiredScopes: []string{"crm:write"}}},
	}}); err != nil {
		t.Fatalf("PublishManifest: %v", err)
	}
	if _, err := polAdmin.PutPolicy(ctx, &policyv1.PutPolicyRequest{Policy: &policyv1.Policy{
		Resource: resource, DisplayName: "Cluster CRM",
		Tools: []*policyv1.Tool{{Name: "list_contacts"}, {Name: "update_deal"}},
	}}); err != nil {
		t.Fatalf("PutPolicy: %v", err)
	}
	resp, err := reg.CreateClient(ctx, &registrationv1.CreateClientRequest{
		ClientId: "cluster-machine",
		Metadata: &registrationv1.ClientMetadata{
			ClientName:              "cluster machine",
			TokenEndpointAuthMethod: registrationv1.TokenEndpointAuthMethod_TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_BASIC,
			GrantTypes:              []registrationv1.GrantType{registrationv1.GrantType_GRANT_TYPE_CLIENT_CREDENTIALS},
		},
		AllowedResources: []*registrationv1.AllowedResource{{Resource: resource, Scopes: []string{"crm:read"}}},
	})
	if err != nil {
		t.Fatalf("CreateClient: %v", err)
	}
	return resp.GetClient().GetClientId(), resp.GetClientSecret()
}

// checkWindows: every failed attempt lies within a fault window, and after
// the last window every kind of operation succeeded again (the system
// recovered by itself, nobody restarted anything).
func checkWindows(t *testing.T, l *ledger, leaderKill, replicaKill time.Time) {
	t.Helper()
	in := func(o op, at time.Time) bool { return !o.end.Before(at) && o.start.Before(at.Add(faultWindow)) }
	lastOK := map[string]time.Time{}
	for _, o := range l.ops {
		if o.err == nil {
			if o.end.After(lastOK[o.kind]) {
				lastOK[o.kind] = o.end
			}
			continue
		}
		if !in(o, leaderKill) && !in(o, replicaKill) {
			t.Errorf("%s failed outside the fault windows at +%v: %v", o.kind, o.start.Sub(leaderKill).Round(time.Millisecond), o.err)
		}
	}
	for _, kind := range []string{"register", "authorize", "code_exchange", "refresh", "client_credentials", "policy_check", "audit_query"} {
		if !lastOK[kind].After(replicaKill.Add(faultWindow)) {
			t.Errorf("%s: no success after the last fault window: not recovered", kind)
		}
	}
}

// checkAcknowledged checks everything clients were told against what the
// system kept. It returns the number of audit events checked.
func checkAcknowledged(t *testing.T, l *ledger, reg registrationv1.RegistrationServiceClient, tok tokenv1.TokenServiceClient,
	aud auditv1.AuditServiceClient, edge *oauthClient,
) int {
	t.Helper()
	ctx := t.Context()
	// Registrations and grants.
	for _, id := range l.clients {
		if _, err := reg.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: id}); err != nil {
			t.Errorf("acknowledged registration %s lost: %v", id, err)
		}
	}
	for _, g := range l.grants {
		if g.grantID == "" {
			t.Errorf("access token of client %s carries no grant_id", g.clientID)
			continue
		}
		if _, err := tok.GetGrant(ctx, &tokenv1.GetGrantRequest{GrantId: g.grantID}); err != nil {
			t.Errorf("acknowledged grant %s lost: %v", g.grantID, err)
		}
	}

	// State-change audit events: every acknowledged registration, code
	// grant and rotation is in the chain (the outboxes drain to it).
	want := map[auditv1.EventType]map[string]int{
		auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED: {},
		auditv1.EventType_EVENT_TYPE_TOKEN_ISSUED:      {},
		auditv1.EventType_EVENT_TYPE_TOKEN_REFRESHED:   {},
	}
	for _, id := range l.clients {
		want[auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED][id]++
	}
	for _, g := range l.grants {
		want[auditv1.EventType_EVENT_TYPE_TOKEN_ISSUED][g.grantID]++
		want[auditv1.EventType_EVENT_TYPE_TOKEN_REFRESHED][g.grantID] += len(g.refresh) - 1
	}
	var missing []string
	checked := 0
	ok := waitFor(ctx, 45*time.Second, func() bool {
		got, n, err := auditCounts(ctx, aud)
		if err != nil {
			return false
		}
		checked = n
		missing = missing[:0]
		for ty, keys := range want {
			for k, c := range keys {
				if got[ty][k] < c {
					missing = append(missing, fmt.Sprintf("%s %s (%d of %d)", ty, k, got[ty][k], c))
				}
			}
		}
		return len(missing) == 0
	})
	if !ok {
		sort.Strings(missing)
		t.Errorf("acknowledged state changes missing from the audit trail: %d, e.g. %v", len(missing), missing[:min(5, len(missing))])
	}
	v, err := aud.VerifyChain(ctx, &auditv1.VerifyChainRequest{})
	switch {
	case err != nil:
		t.Errorf("VerifyChain: %v", err)
	case !v.GetIntact():
		t.Errorf("audit chain broken: %v", v.GetFirstBreak())
	}

	// Refresh tokens: the current one of every grant works once more, and
	// no rotated-away one works twice. The oldest is replayed (with no
	// grace configured, every rotated token is dead).
	for _, g := range l.grants {
		if g.uncertain || len(g.refresh) < 2 {
			continue
		}
		cur := g.refresh[len(g.refresh)-1]
		if _, err := edge.token(ctx, refreshForm(cur, g.clientID), [2]string{}); err != nil {
			t.Errorf("current refresh token of grant %s refused: %v", g.grantID, err)
		}
		if _, err := edge.token(ctx, refreshForm(g.refresh[0], g.clientID), [2]string{}); err == nil {
			t.Errorf("rotated refresh token of grant %s worked twice", g.grantID)
		}
	}
	return checked
}

func auditCounts(ctx context.Context, aud auditv1.AuditServiceClient) (map[auditv1.EventType]map[string]int, int, error) {
	got := map[auditv1.EventType]map[string]int{}
	n := 0
	token := ""
	for range 200 {
		resp, err := aud.QueryEvents(ctx, &auditv1.QueryEventsRequest{
			Filter: &auditv1.EventFilter{Types: []auditv1.EventType{
				auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED, auditv1.EventType_EVENT_TYPE_TOKEN_ISSUED, auditv1.EventType_EVENT_TYPE_TOKEN_REFRESHED,
			}},
			Order: auditv1.EventOrder_EVENT_ORDER_OLDEST_FIRST, PageSize: 1000, PageToken: token,
		})
		if err != nil {
			return nil, 0, err
		}
		for _, e := range resp.GetEvents() {
			if got[e.GetType()] == nil {
				got[e.GetType()] = map[string]int{}
			}
			key := e.GetGrantId()
			if e.GetType() == auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED {
				key = e.GetClientId()
			}
			got[e.GetType()][key]++
			n++
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	return got, n, nil
}
