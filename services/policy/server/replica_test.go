package server_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/service/servicetest"
	"github.com/mcpid/mcpid/services/policy/internal/testutil"
	"github.com/mcpid/mcpid/services/policy/server"
)

// TestSecondReplicaSeesChangesThroughWatch: a change applied on one replica
// reaches another's in-memory policies through the etcd watch; Check on the
// second replica never reads etcd.
func TestSecondReplicaSeesChangesThroughWatch(t *testing.T) {
	e := newEnv(t)
	a := e.start()
	b := e.start()
	onB := e.mcp(b, crm)
	tok := e.keys.Token(t, crm, "crm:contacts.read")
	checkB := func() *policyv1.CheckResult {
		resp, err := onB.Check(ctx(t), &policyv1.CheckRequest{AccessToken: tok, Resource: crm, Tool: "list_contacts"})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetResult()
	}
	if r := checkB(); r.GetReason() != policyv1.DecisionReason_DECISION_REASON_RESOURCE_UNKNOWN {
		t.Fatalf("before: %v", r.GetReason())
	}
	e.installCRM(a)
	eventually(t, "replica b to allow", func() bool { return checkB().GetDecision() == allow })

	// An operator denies the tool on replica a; b follows.
	p := crmPolicy()
	p.Tools = append(p.Tools, &policyv1.Tool{Name: "list_contacts", Deny: true})
	if _, err := e.admin(a).PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: p}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "replica b to deny", func() bool {
		return checkB().GetReason() == policyv1.DecisionReason_DECISION_REASON_TOOL_DENIED
	})
	effA, err := e.admin(a).GetEffectivePolicy(ctx(t), &policyv1.GetEffectivePolicyRequest{Resource: crm})
	if err != nil {
		t.Fatal(err)
	}
	effB, err := e.admin(b).GetEffectivePolicy(ctx(t), &policyv1.GetEffectivePolicyRequest{Resource: crm})
	if err != nil || effB.GetEffective().GetRevision() != effA.GetEffective().GetRevision() {
		t.Fatalf("revisions a %d, b %v (%v)", effA.GetEffective().GetRevision(), effB.GetEffective().GetRevision(), err)
	}

	if _, err := e.admin(a).DeletePolicy(ctx(t), &policyv1.DeletePolicyRequest{Resource: crm}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "replica b to forget the resource", func() bool {
		return checkB().GetReason() == policyv1.DecisionReason_DECISION_REASON_RESOURCE_UNKNOWN
	})
}

// TestNotReadyFailsClosed: a replica that cannot reach etcd is not ready,
// and its Check answers DENY / NOT_READY, never an allow and never an
// error a careless caller could take for one.
func TestNotReadyFailsClosed(t *testing.T) {
	e := newEnv(t)
	flags := e.pki.ServeTLS(t, server.Name, servicetest.Flags([]string{"http://127.0.0.1:1"}))
	flags.EtcdDialTimeout = time.Second
	srv, err := server.Config{
		Flags:      flags,
		GatewayTLS: e.pki.GatewayTLS(server.Name),
		Issuer:     testutil.Issuer,
		KeySource:  e.keys.Set,
	}.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	servicetest.Run(t, srv)
	c := e.mcp(srv, crm)
	var resp *policyv1.CheckResponse
	eventually(t, "the server to answer", func() bool {
		resp, err = c.Check(ctx(t), &policyv1.CheckRequest{AccessToken: e.keys.Token(t, crm, "crm:admin"), Resource: crm, Tool: "list_contacts"})
		return err == nil
	})
	if r := resp.GetResult(); r.GetDecision() != deny || r.GetReason() != policyv1.DecisionReason_DECISION_REASON_NOT_READY || r.GetCacheTtl().AsDuration() != 0 {
		t.Fatalf("got %v", r)
	}
	if code, _ := servicetest.HTTP(t, "GET", "http://"+srv.HTTPAddr().String()+"/readyz", "", ""); code == 200 {
		t.Fatal("/readyz is 200 without a synced cache")
	}
	_, err = e.admin(srv).GetEffectivePolicy(ctx(t), &policyv1.GetEffectivePolicyRequest{Resource: crm})
	expectCode(t, err, codes.Unavailable, "ERROR_REASON_STORE_UNAVAILABLE")
}

func TestDrift(t *testing.T) {
	e := newEnv(t)
	e.start()
	e.installCRM(nil)
	rep, err := e.auditor(nil).GetDrift(ctx(t), &policyv1.GetDriftRequest{Resource: crm})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, it := range rep.GetReport().GetItems() {
		kinds[it.GetKind().String()+"/"+it.GetTool()+strings.Join(it.GetScopes(), ",")] = it.GetDetail()
	}
	for _, want := range []string{
		"DRIFT_KIND_TOOL_NOT_REVIEWED/list_contacts",
		"DRIFT_KIND_TOOL_NOT_IN_MANIFEST/sales_report",
		"DRIFT_KIND_SCOPE_NOT_IN_MANIFEST/crm:reports.read",
	} {
		if _, ok := kinds[want]; !ok {
			t.Errorf("drift lacks %s: %v", want, kinds)
		}
	}
	if rep.GetReport().GetServerVersion() != "1.4.2" || rep.GetReport().GetPolicyRevision() == 0 || rep.GetReport().GetManifestRevision() == 0 {
		t.Errorf("report header %v", rep.GetReport())
	}

	// A release stops declaring a scope the operator policy requires: the
	// publish still succeeds, the requirement stays (fail closed), and drift
	// says so.
	p := crmPolicy()
	p.Tools = append(p.Tools, &policyv1.Tool{Name: "update_deal", RequiredScopes: []string{"crm:contacts.export"}})
	if _, err := e.admin(nil).PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: p}); err != nil {
		t.Fatal(err)
	}
	m := crmManifest()
	m.ServerVersion = "2.0.0"
	m.Scopes = m.Scopes[:2] // no crm:contacts.export, no crm:admin
	m.Tools = []*policyv1.Tool{{Name: "update_deal", RequiredScopes: []string{"crm:deals.write"}}}
	pub, err := e.mcp(nil, crm).PublishManifest(ctx(t), &policyv1.PublishManifestRequest{Manifest: m})
	if err != nil {
		t.Fatal(err)
	}
	if pub.GetDriftCount() == 0 || pub.GetState() != policyv1.ResourceState_RESOURCE_STATE_ACTIVE {
		t.Fatalf("publish: %v", pub)
	}
	rep, err = e.auditor(nil).GetDrift(ctx(t), &policyv1.GetDriftRequest{Resource: crm})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, it := range rep.GetReport().GetItems() {
		if it.GetKind() == policyv1.DriftKind_DRIFT_KIND_SCOPE_UNDEFINED && it.GetTool() == "update_deal" {
			found = true
		}
	}
	if !found {
		t.Errorf("no SCOPE_UNDEFINED for update_deal: %v", rep.GetReport().GetItems())
	}
	resp, err := e.mcp(nil, crm).Check(ctx(t), &policyv1.CheckRequest{AccessToken: e.keys.Token(t, crm, "crm:deals.write"), Resource: crm, Tool: "update_deal"})
	if err != nil || resp.GetResult().GetReason() != policyv1.DecisionReason_DECISION_REASON_SCOPE_MISSING ||
		strings.Join(resp.GetResult().GetMissingScopes(), " ") != "crm:contacts.export" {
		t.Fatalf("undefined scope must stay required: %v, %v", resp, err)
	}

	// ListDrift pages through resources with drift.
	if _, err := e.admin(nil).PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: &policyv1.Policy{Resource: other}}); err != nil {
		t.Fatal(err)
	}
	var seen []string
	token := ""
	for range 5 {
		page, err := e.auditor(nil).ListDrift(ctx(t), &policyv1.ListDriftRequest{PageSize: 1, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.GetReports() {
			seen = append(seen, r.GetResource())
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	if strings.Join(seen, " ") != crm+" "+other {
		t.Errorf("ListDrift %v", seen)
	}
	_, err = e.auditor(nil).ListDrift(ctx(t), &policyv1.ListDriftRequest{PageToken: "x"})
	expectCode(t, err, codes.InvalidArgument, "ERROR_REASON_PAGE_TOKEN_INVALID")
	_, err = e.auditor(nil).GetDrift(ctx(t), &policyv1.GetDriftRequest{Resource: "https://none.example.com"})
	expectCode(t, err, codes.NotFound, "ERROR_REASON_RESOURCE_NOT_FOUND")
}

func TestScopeCatalogs(t *testing.T) {
	e := newEnv(t)
	e.start()
	tokenSvc := e.tokenService(nil)

	// Watch from now, before anything exists.
	wctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	stream, err := tokenSvc.WatchScopeCatalogs(wctx, &policyv1.WatchScopeCatalogsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || len(first.GetChanges()) != 0 {
		t.Fatalf("first message: %v, %v", first, err)
	}

	// A manifest alone is PENDING: unknown to the token service.
	if _, err := e.mcp(nil, crm).PublishManifest(ctx(t), &policyv1.PublishManifestRequest{Manifest: crmManifest()}); err != nil {
		t.Fatal(err)
	}
	_, err = tokenSvc.GetScopeCatalog(ctx(t), &policyv1.GetScopeCatalogRequest{Resource: crm})
	expectCode(t, err, codes.NotFound, "ERROR_REASON_RESOURCE_NOT_FOUND")
	_, err = tokenSvc.GetScopeCatalog(ctx(t), &policyv1.GetScopeCatalogRequest{Resource: "urn:x"})
	expectCode(t, err, codes.InvalidArgument, "ERROR_REASON_INVALID_FIELD")

	if _, err := e.admin(nil).PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: crmPolicy()}); err != nil {
		t.Fatal(err)
	}
	cat, err := tokenSvc.GetScopeCatalog(ctx(t), &policyv1.GetScopeCatalogRequest{Resource: crm})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, s := range cat.GetCatalog().GetScopes() {
		names = append(names, s.GetName())
		if s.GetName() == "offline_access" {
			t.Error("offline_access in a catalogue")
		}
	}
	if strings.Join(names, " ") != "crm:admin crm:contacts.export crm:contacts.read crm:deals.write crm:reports.read" || cat.GetCatalog().GetDisplayName() != "Acme CRM" {
		t.Errorf("catalogue %v", cat.GetCatalog())
	}

	// The watch delivers the resource once it is ACTIVE (the PENDING
	// publish is not sent).
	var msg *policyv1.WatchScopeCatalogsResponse
	for msg == nil || len(msg.GetChanges()) == 0 {
		if msg, err = stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if ch := msg.GetChanges()[0]; ch.GetResource() != crm || ch.GetCatalog() == nil || len(msg.GetChanges()) != 1 {
		t.Fatalf("change %v", msg)
	}
	activeRev := msg.GetRevision()

	// Listing at one revision, across pages.
	if _, err := e.admin(nil).PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: &policyv1.Policy{Resource: other}}); err != nil {
		t.Fatal(err)
	}
	page1, err := tokenSvc.ListScopeCatalogs(ctx(t), &policyv1.ListScopeCatalogsRequest{PageSize: 1})
	if err != nil || len(page1.GetCatalogs()) != 1 || page1.GetNextPageToken() == "" {
		t.Fatalf("page 1: %v, %v", page1, err)
	}
	if _, err := e.admin(nil).PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: &policyv1.Policy{Resource: "https://z.example.com/mcp"}}); err != nil {
		t.Fatal(err)
	}
	page2, err := tokenSvc.ListScopeCatalogs(ctx(t), &policyv1.ListScopeCatalogsRequest{PageSize: 10, PageToken: page1.GetNextPageToken()})
	if err != nil {
		t.Fatal(err)
	}
	if page2.GetRevision() != page1.GetRevision() || len(page2.GetCatalogs()) != 1 || page2.GetCatalogs()[0].GetResource() != other || page2.GetNextPageToken() != "" {
		t.Fatalf("page 2 (must not see the later write): %v", page2)
	}
	_, err = tokenSvc.ListScopeCatalogs(ctx(t), &policyv1.ListScopeCatalogsRequest{PageToken: "nope"})
	expectCode(t, err, codes.InvalidArgument, "ERROR_REASON_PAGE_TOKEN_INVALID")

	// Resume after the activation: the later changes, without a gap.
	resumed, err := tokenSvc.WatchScopeCatalogs(wctx, &policyv1.WatchScopeCatalogsRequest{StartRevision: activeRev + 1})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 2 {
		m, err := resumed.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range m.GetChanges() {
			got = append(got, ch.GetResource())
		}
	}
	if strings.Join(got, " ") != other+" https://z.example.com/mcp" {
		t.Errorf("resumed changes %v", got)
	}

	// Deletion is a change without a catalogue.
	if _, err := e.admin(nil).DeletePolicy(ctx(t), &policyv1.DeletePolicyRequest{Resource: crm}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := resumed.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.GetChanges()) > 0 {
			if ch := m.GetChanges()[0]; ch.GetResource() != crm || ch.GetCatalog() != nil {
				t.Fatalf("deletion: %v", ch)
			}
			break
		}
	}

	// Revisions out of range.
	cur := page1.GetRevision()
	ahead, err := tokenSvc.WatchScopeCatalogs(ctx(t), &policyv1.WatchScopeCatalogsRequest{StartRevision: cur + 1000})
	if err == nil {
		_, err = ahead.Recv()
	}
	expectCode(t, err, codes.OutOfRange, "ERROR_REASON_REVISION_AHEAD")
	e.etcd.Compact(t, 0)
	old, err := tokenSvc.WatchScopeCatalogs(ctx(t), &policyv1.WatchScopeCatalogsRequest{StartRevision: 2})
	if err == nil {
		for {
			if _, err = old.Recv(); err != nil {
				break
			}
		}
	}
	expectCode(t, err, codes.OutOfRange, "ERROR_REASON_REVISION_COMPACTED")
	_, err = tokenSvc.ListScopeCatalogs(ctx(t), &policyv1.ListScopeCatalogsRequest{PageToken: page1.GetNextPageToken()})
	expectCode(t, err, codes.OutOfRange, "ERROR_REASON_REVISION_COMPACTED")

	// The token service reads catalogues; it does not check.
	_, err = tokenSvc.Check(ctx(t), &policyv1.CheckRequest{Resource: crm, Tool: "x"})
	expectCode(t, err, codes.PermissionDenied, "ERROR_REASON_CALLER_NOT_ALLOWED")
	// MCP servers do not follow the feed.
	s, err := e.mcp(nil, crm).WatchScopeCatalogs(ctx(t), &policyv1.WatchScopeCatalogsRequest{})
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.PermissionDenied || errors.Is(err, io.EOF) {
		t.Errorf("MCP server watch: %v", err)
	}
}

func TestWatchProgressOnQuietStream(t *testing.T) {
	e := newEnv(t)
	e.start()
	stream, err := e.tokenService(nil).WatchScopeCatalogs(ctx(t), &policyv1.WatchScopeCatalogsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	// Nothing happens; within the progress interval (4 s) the stream says
	// it is alive.
	second, err := stream.Recv()
	if err != nil || len(second.GetChanges()) != 0 || second.GetRevision() < first.GetRevision() {
		t.Fatalf("progress: %v, %v", second, err)
	}
}
