package server_test

import (
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/policy/internal/testutil"
)

func i64(v int64) *int64 { return &v }

func violations(err error) []string {
	st, _ := status.FromError(err)
	var out []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out = append(out, v.GetField())
			}
		}
	}
	return out
}

func expectCode(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	if status.Code(err) != code || reasonOf(err) != reason {
		t.Fatalf("got %v (reason %q), want %v / %s", err, reasonOf(err), code, reason)
	}
}

func TestPolicyDocuments(t *testing.T) {
	e := newEnv(t)
	e.start()
	admin := e.admin(nil)
	srvc := e.mcp(nil, crm)

	// Validation: every problem, with paths, nothing written.
	bad := crmPolicy()
	bad.Tools[0].Conditions[0].Expression = "arguments.limit <="
	bad.Tools[1].RequiredScopes = []string{"crm:nope"}
	_, err := admin.PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: bad})
	expectCode(t, err, codes.InvalidArgument, "ERROR_REASON_POLICY_INVALID")
	got := strings.Join(violations(err), " ")
	for _, want := range []string{"policy.tools[0].conditions[0].expression", "policy.tools[1].required_scopes[0]"} {
		if !strings.Contains(got, want) {
			t.Errorf("violations %q lack %s", got, want)
		}
	}
	if info := apierr.Info(err); info.GetMetadata()["violations"] == "" {
		t.Errorf("ErrorInfo metadata %v", info.GetMetadata())
	}
	_, err = admin.GetPolicy(ctx(t), &policyv1.GetPolicyRequest{Resource: crm})
	expectCode(t, err, codes.NotFound, "ERROR_REASON_POLICY_NOT_FOUND")

	// A policy referencing manifest scopes is validated against the
	// manifest stored with it: none yet.
	refs := crmPolicy()
	refs.Tools[0].RequiredScopes = []string{"crm:contacts.read"}
	_, err = admin.PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: refs})
	expectCode(t, err, codes.InvalidArgument, "ERROR_REASON_POLICY_INVALID")

	pub, err := srvc.PublishManifest(ctx(t), &policyv1.PublishManifestRequest{Manifest: crmManifest()})
	if err != nil {
		t.Fatal(err)
	}
	if !pub.GetChanged() || pub.GetState() != policyv1.ResourceState_RESOURCE_STATE_PENDING || pub.GetManifest().GetRevision() == 0 ||
		pub.GetManifest().GetPublishedBy() != "resource:"+crm {
		t.Fatalf("publish: %v", pub)
	}
	again, err := srvc.PublishManifest(ctx(t), &policyv1.PublishManifestRequest{Manifest: crmManifest()})
	if err != nil {
		t.Fatal(err)
	}
	if again.GetChanged() || again.GetManifest().GetRevision() != pub.GetManifest().GetRevision() {
		t.Fatalf("an identical manifest (a server restart) must change nothing: %v", again)
	}

	// Validate only: the result, nothing stored.
	dry, err := admin.PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: crmPolicy(), ValidateOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if !dry.GetChanged() || dry.GetPolicy().GetRevision() != 0 || len(dry.GetEffective().GetTools()) == 0 {
		t.Fatalf("validate only: %v", dry)
	}
	if _, err := admin.GetPolicy(ctx(t), &policyv1.GetPolicyRequest{Resource: crm}); status.Code(err) != codes.NotFound {
		t.Fatalf("validate_only wrote: %v", err)
	}

	// Create only, then replace with optimistic concurrency.
	put, err := admin.PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: crmPolicy(), ExpectedRevision: i64(0)})
	if err != nil {
		t.Fatal(err)
	}
	rev := put.GetPolicy().GetRevision()
	if !put.GetChanged() || rev == 0 || put.GetPolicy().GetUpdatedBy() != "operator:alice" || put.GetEffective().GetState() != policyv1.ResourceState_RESOURCE_STATE_ACTIVE {
		t.Fatalf("put: %v", put)
	}
	_, err = admin.PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: crmPolicy(), ExpectedRevision: i64(0)})
	expectCode(t, err, codes.AlreadyExists, "ERROR_REASON_POLICY_ALREADY_EXISTS")
	same, err := admin.PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: crmPolicy(), ExpectedRevision: i64(rev)})
	if err != nil || same.GetChanged() || same.GetPolicy().GetRevision() != rev {
		t.Fatalf("identical policy: %v, %v", same, err)
	}
	changed := crmPolicy()
	changed.DisplayName = "Acme CRM (prod)"
	_, err = admin.PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: changed, ExpectedRevision: i64(rev + 100)})
	expectCode(t, err, codes.Aborted, "ERROR_REASON_REVISION_MISMATCH")
	if md := apierr.Info(err).GetMetadata(); md["current_revision"] == "" {
		t.Errorf("current_revision missing: %v", md)
	}
	up, err := admin.PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: changed, ExpectedRevision: i64(rev)})
	if err != nil || !up.GetChanged() || up.GetPolicy().GetRevision() <= rev {
		t.Fatalf("update: %v, %v", up, err)
	}
	_, err = admin.PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: &policyv1.Policy{Resource: other}, ExpectedRevision: i64(5)})
	expectCode(t, err, codes.NotFound, "ERROR_REASON_POLICY_NOT_FOUND")

	// A server restart publishing a new manifest never overwrites what
	// operators wrote.
	m := crmManifest()
	m.ServerVersion = "1.5.0"
	if _, err := srvc.PublishManifest(ctx(t), &policyv1.PublishManifestRequest{Manifest: m}); err != nil {
		t.Fatal(err)
	}
	gp, err := admin.GetPolicy(ctx(t), &policyv1.GetPolicyRequest{Resource: crm})
	if err != nil {
		t.Fatal(err)
	}
	if gp.GetPolicy().GetRevision() != up.GetPolicy().GetRevision() || gp.GetPolicy().GetDisplayName() != "Acme CRM (prod)" {
		t.Fatalf("policy after a manifest publish: %v", gp.GetPolicy())
	}
	want := proto.Clone(changed).(*policyv1.Policy)
	got2 := proto.Clone(gp.GetPolicy()).(*policyv1.Policy)
	got2.Revision, got2.UpdateTime, got2.UpdatedBy = 0, nil, ""
	if !proto.Equal(want, got2) {
		t.Fatalf("stored policy differs from what was put:\n got %v\nwant %v", got2, want)
	}
	gm, err := e.auditor(nil).GetManifest(ctx(t), &policyv1.GetManifestRequest{Resource: crm})
	if err != nil || gm.GetManifest().GetServerVersion() != "1.5.0" {
		t.Fatalf("GetManifest: %v, %v", gm, err)
	}

	// Non-canonical spellings name the same resource.
	if _, err := admin.GetPolicy(ctx(t), &policyv1.GetPolicyRequest{Resource: "HTTPS://CRM.example.com:443/mcp/"}); err != nil {
		t.Fatalf("non-canonical resource: %v", err)
	}

	// Auditors read, never write.
	_, err = e.auditor(nil).PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: crmPolicy()})
	expectCode(t, err, codes.PermissionDenied, "ERROR_REASON_CALLER_NOT_ALLOWED")
	// MCP servers may not touch operator policy.
	_, err = srvc.PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: crmPolicy()})
	expectCode(t, err, codes.PermissionDenied, "ERROR_REASON_CALLER_NOT_ALLOWED")

	// Manifest validation.
	badMan := crmManifest()
	badMan.Tools[0].Deny = true
	_, err = srvc.PublishManifest(ctx(t), &policyv1.PublishManifestRequest{Manifest: badMan})
	expectCode(t, err, codes.InvalidArgument, "ERROR_REASON_MANIFEST_INVALID")
	if got := violations(err); len(got) != 1 || got[0] != "manifest.tools[0].deny" {
		t.Errorf("violations %v", got)
	}

	// Listing, with the state filter bound into the page token.
	for _, r := range []string{"https://a.example.com/mcp", "https://b.example.com/mcp", "https://c.example.com/mcp"} {
		if _, err := admin.PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: &policyv1.Policy{Resource: r}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.mcp(nil, other).PublishManifest(ctx(t), &policyv1.PublishManifestRequest{Manifest: &policyv1.Manifest{Resource: other}}); err != nil {
		t.Fatal(err)
	}
	var all []string
	token := ""
	for range 10 {
		page, err := e.auditor(nil).ListPolicies(ctx(t), &policyv1.ListPoliciesRequest{PageSize: 2, PageToken: token, State: policyv1.ResourceState_RESOURCE_STATE_ACTIVE})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.GetPolicies()) > 2 {
			t.Fatalf("page of %d", len(page.GetPolicies()))
		}
		for _, p := range page.GetPolicies() {
			all = append(all, p.GetResource())
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	if got := strings.Join(all, " "); got != "https://a.example.com/mcp https://b.example.com/mcp https://c.example.com/mcp "+crm {
		t.Errorf("active resources %q", got)
	}
	pending, err := admin.ListPolicies(ctx(t), &policyv1.ListPoliciesRequest{State: policyv1.ResourceState_RESOURCE_STATE_PENDING})
	if err != nil || len(pending.GetPolicies()) != 1 || pending.GetPolicies()[0].GetResource() != other {
		t.Fatalf("pending: %v, %v", pending, err)
	}
	first, err := admin.ListPolicies(ctx(t), &policyv1.ListPoliciesRequest{PageSize: 1, State: policyv1.ResourceState_RESOURCE_STATE_ACTIVE})
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.ListPolicies(ctx(t), &policyv1.ListPoliciesRequest{PageToken: first.GetNextPageToken(), State: policyv1.ResourceState_RESOURCE_STATE_PENDING})
	expectCode(t, err, codes.InvalidArgument, "ERROR_REASON_PAGE_TOKEN_INVALID")
	_, err = admin.ListPolicies(ctx(t), &policyv1.ListPoliciesRequest{PageToken: "garbage"})
	expectCode(t, err, codes.InvalidArgument, "ERROR_REASON_PAGE_TOKEN_INVALID")

	// Delete with optimistic concurrency.
	_, err = admin.DeletePolicy(ctx(t), &policyv1.DeletePolicyRequest{Resource: crm, ExpectedRevision: i64(1)})
	expectCode(t, err, codes.Aborted, "ERROR_REASON_REVISION_MISMATCH")
	if _, err := admin.DeletePolicy(ctx(t), &policyv1.DeletePolicyRequest{Resource: crm, ExpectedRevision: i64(gp.GetPolicy().GetRevision())}); err != nil {
		t.Fatal(err)
	}
	_, err = admin.DeletePolicy(ctx(t), &policyv1.DeletePolicyRequest{Resource: crm})
	expectCode(t, err, codes.NotFound, "ERROR_REASON_RESOURCE_NOT_FOUND")
	_, err = admin.GetManifest(ctx(t), &policyv1.GetManifestRequest{Resource: crm})
	expectCode(t, err, codes.NotFound, "ERROR_REASON_MANIFEST_NOT_FOUND")
	// A PENDING resource is deleted with expected revision 0.
	if _, err := admin.DeletePolicy(ctx(t), &policyv1.DeletePolicyRequest{Resource: other, ExpectedRevision: i64(0)}); err != nil {
		t.Fatal(err)
	}
	resp, err := admin.Check(ctx(t), &policyv1.CheckRequest{AccessToken: e.keys.Token(t, crm, "crm:admin"), Resource: crm, Tool: "list_contacts"})
	if err != nil || resp.GetResult().GetReason() != policyv1.DecisionReason_DECISION_REASON_RESOURCE_UNKNOWN {
		t.Fatalf("check after delete: %v, %v", resp, err)
	}
}

// TestMCPServerOwnResourceOnly: an MCP server, by certificate or by bearer
// token, checks and publishes for its own resource and is refused for any
// other.
func TestMCPServerOwnResourceOnly(t *testing.T) {
	e := newEnv(t)
	e.start()
	e.installCRM(nil)
	tok := e.keys.Token(t, other, "")

	mismatch := func(t *testing.T, err error) {
		t.Helper()
		expectCode(t, err, codes.PermissionDenied, "ERROR_REASON_CALLER_RESOURCE_MISMATCH")
	}
	viaCert := e.mcp(nil, crm)
	_, err := viaCert.Check(ctx(t), &policyv1.CheckRequest{AccessToken: tok, Resource: other, Tool: "x"})
	mismatch(t, err)
	if md := apierr.Info(err).GetMetadata(); md["resource"] != other {
		t.Errorf("metadata %v", md)
	}
	_, err = viaCert.PublishManifest(ctx(t), &policyv1.PublishManifestRequest{Manifest: &policyv1.Manifest{Resource: other}})
	mismatch(t, err)
	_, err = viaCert.BatchCheck(ctx(t), &policyv1.BatchCheckRequest{AccessToken: tok, Resource: other, Items: []*policyv1.BatchCheckItem{{Tool: "x"}}})
	mismatch(t, err)
	_, err = viaCert.ListAllowedTools(ctx(t), &policyv1.ListAllowedToolsRequest{AccessToken: tok, Resource: other})
	mismatch(t, err)
	_, err = viaCert.GetEffectivePolicy(ctx(t), &policyv1.GetEffectivePolicyRequest{Resource: other})
	mismatch(t, err)
	_, err = viaCert.GetScopeCatalog(ctx(t), &policyv1.GetScopeCatalogRequest{Resource: other})
	mismatch(t, err)
	_, err = viaCert.GetManifest(ctx(t), &policyv1.GetManifestRequest{Resource: other})
	mismatch(t, err)
	// Its own resource, spelled differently, is its own.
	if _, err := viaCert.GetScopeCatalog(ctx(t), &policyv1.GetScopeCatalogRequest{Resource: "https://CRM.example.com/mcp/"}); err != nil {
		t.Fatalf("own catalogue: %v", err)
	}
	// Operator-only methods stay closed.
	_, err = viaCert.Explain(ctx(t), &policyv1.ExplainRequest{Resource: crm, Tool: "x"})
	expectCode(t, err, codes.PermissionDenied, "ERROR_REASON_CALLER_NOT_ALLOWED")

	// The bearer path: a client_credentials token for urn:mcpid:policy bound
	// to the resource, over TLS without a client certificate.
	anon := e.client(nil, nil)
	callerClaims := testutil.Claims(principal.PolicyAudience, "")
	callerClaims["resource"] = crm
	callerClaims["sub"] = "crm-server"
	callerClaims["client_id"] = "crm-server"
	caller := e.keys.Sign(t, callerClaims)
	own, err := anon.Check(bearer(ctx(t), caller), &policyv1.CheckRequest{AccessToken: e.keys.Token(t, crm, "crm:contacts.read"), Resource: crm, Tool: "list_contacts"})
	if err != nil || own.GetResult().GetDecision() != allow {
		t.Fatalf("bearer MCP server, own resource: %v, %v", own, err)
	}
	_, err = anon.Check(bearer(ctx(t), caller), &policyv1.CheckRequest{AccessToken: tok, Resource: other, Tool: "x"})
	mismatch(t, err)
	_, err = anon.PublishManifest(bearer(ctx(t), caller), &policyv1.PublishManifestRequest{Manifest: &policyv1.Manifest{Resource: other}})
	mismatch(t, err)

	// Tokens that are not caller tokens are refused outright.
	for name, bad := range map[string]string{
		"resource token":       e.keys.Token(t, crm, "crm:admin"),
		"alg none":             e.keys.AlgNone(callerClaims),
		"HMAC with public key": e.keys.HMACWithPublicKey(t, callerClaims),
	} {
		_, err := anon.Check(bearer(ctx(t), bad), &policyv1.CheckRequest{AccessToken: tok, Resource: crm, Tool: "x"})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v, want Unauthenticated", name, err)
		}
	}
	if _, err := anon.Check(ctx(t), &policyv1.CheckRequest{Resource: crm, Tool: "x"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no credentials: %v", err)
	}

	// Operators (bearer, admin audience) may check any resource.
	adminClaims := testutil.Claims(principal.AdminAudience, "")
	adminClaims["roles"] = []string{"auditor"}
	resp, err := anon.Check(bearer(ctx(t), e.keys.Sign(t, adminClaims)), &policyv1.CheckRequest{AccessToken: tok, Resource: other, Tool: "x"})
	if err != nil || resp.GetResult().GetReason() != policyv1.DecisionReason_DECISION_REASON_RESOURCE_UNKNOWN {
		t.Fatalf("operator check: %v, %v", resp, err)
	}
}

// TestRequestValidation: malformed requests are INVALID_ARGUMENT with the
// field named, and change nothing.
func TestRequestValidation(t *testing.T) {
	e := newEnv(t)
	e.start()
	admin := e.admin(nil)
	invalid := func(name string, err error, field string) {
		t.Helper()
		if status.Code(err) != codes.InvalidArgument || reasonOf(err) != "ERROR_REASON_INVALID_FIELD" {
			t.Errorf("%s: %v, want INVALID_ARGUMENT / INVALID_FIELD", name, err)
			return
		}
		if got := apierr.Info(err).GetMetadata()["field"]; got != field {
			t.Errorf("%s: field %q, want %q", name, got, field)
		}
	}
	_, err := admin.PutPolicy(ctx(t), &policyv1.PutPolicyRequest{})
	invalid("PutPolicy without a policy", err, "policy")
	_, err = admin.PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: &policyv1.Policy{Resource: crm}, ExpectedRevision: i64(-1)})
	invalid("negative expected_revision", err, "expected_revision")
	_, err = admin.PublishManifest(ctx(t), &policyv1.PublishManifestRequest{})
	invalid("PublishManifest without a manifest", err, "manifest")
	_, err = admin.GetPolicy(ctx(t), &policyv1.GetPolicyRequest{Resource: "crm"})
	invalid("relative resource", err, "resource")
	_, err = admin.DeletePolicy(ctx(t), &policyv1.DeletePolicyRequest{})
	invalid("DeletePolicy without a resource", err, "resource")
	_, err = admin.ListPolicies(ctx(t), &policyv1.ListPoliciesRequest{State: 42})
	invalid("unknown state", err, "state")
	w, err := e.tokenService(nil).WatchScopeCatalogs(ctx(t), &policyv1.WatchScopeCatalogsRequest{StartRevision: -3})
	if err == nil {
		_, err = w.Recv()
	}
	invalid("negative start_revision", err, "start_revision")

	// A policy whose resource is not a URI is a document problem.
	_, err = admin.PutPolicy(ctx(t), &policyv1.PutPolicyRequest{Policy: &policyv1.Policy{Resource: "urn:mcpid:admin"}})
	expectCode(t, err, codes.InvalidArgument, "ERROR_REASON_POLICY_INVALID")
	list, err := admin.ListPolicies(ctx(t), &policyv1.ListPoliciesRequest{})
	if err != nil || len(list.GetPolicies()) != 0 {
		t.Fatalf("something was written: %v, %v", list, err)
	}
}
