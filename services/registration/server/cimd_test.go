package server_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/services/registration/server"
)

// cimdDoc is a metadata document for id.
func cimdDoc(id string, redirects ...string) string {
	return `{"client_id":"` + id + `","client_name":"Agent","redirect_uris":["` + strings.Join(redirects, `","`) + `"],"grant_types":["authorization_code","refresh_token"],"unknown":true}`
}

func TestCIMD(t *testing.T) {
	f := newFetchEnv(t, nil)
	ctx := tctx(t)
	resolve := func(id string) (*registrationv1.Client, error) {
		r, err := f.token.ResolveClient(ctx, &registrationv1.ResolveClientRequest{ClientId: id})
		return r.GetClient(), err
	}

	t.Run("document is fetched, validated and cached", func(t *testing.T) {
		const id = "https://agent.example.test/clients/good.json"
		doc := strings.Replace(cimdDoc(id, "http://127.0.0.1/cb", "https://agent.example.test/cb"), `"unknown":true`, `"application_type":"native"`, 1)
		f.site.json("/clients/good.json", doc, "Cache-Control", "max-age=600")
		c, err := resolve(id)
		if err != nil {
			t.Fatal(err)
		}
		if c.GetSource() != registrationv1.ClientSource_CLIENT_SOURCE_CIMD || c.GetVerification().GetStatus() != unverified ||
			c.GetMetadata().GetTokenEndpointAuthMethod() != authNone || c.GetMetadata().GetApplicationType() != registrationv1.ApplicationType_APPLICATION_TYPE_NATIVE ||
			c.GetCimd().GetDocumentSha256() == "" || c.GetCreatedBy() != "service:registration" {
			t.Fatalf("client: %v", c)
		}
		if d := c.GetCimd().GetStaleTime().AsTime().Sub(c.GetCimd().GetFetchTime().AsTime()); d != 10*time.Minute {
			t.Fatalf("cached for %v, want max-age 600s", d)
		}
		evs := f.eventsFor(t, id, auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED)
		if len(evs) != 1 || evs[0].GetActor().GetKind() != auditv1.ActorKind_ACTOR_KIND_SERVICE || evs[0].GetDetails().GetFields()["source"].GetStringValue() != "cimd" {
			t.Fatalf("event: %v", evs)
		}
		// Fresh: answered from the stored copy.
		if _, err := resolve(id); err != nil || f.site.hitCount("/clients/good.json") != 1 {
			t.Fatalf("second resolve: %v, %d fetches", err, f.site.hitCount("/clients/good.json"))
		}
		// Stale: fetched again; the same document changes nothing.
		f.clk.Advance(11 * time.Minute)
		again, err := resolve(id)
		if err != nil || f.site.hitCount("/clients/good.json") != 2 || again.GetConsentEpoch() != c.GetConsentEpoch() ||
			len(f.eventsFor(t, id, auditv1.EventType_EVENT_TYPE_CLIENT_UPDATED)) != 0 {
			t.Fatalf("refetch: %v, %d fetches", err, f.site.hitCount("/clients/good.json"))
		}
		// A changed document with new redirect URIs: new consent epoch.
		f.site.json("/clients/good.json", cimdDoc(id, "https://agent.example.test/new-cb"), "Cache-Control", "max-age=600")
		f.clk.Advance(11 * time.Minute)
		changed, err := resolve(id)
		if err != nil || changed.GetConsentEpoch() <= c.GetConsentEpoch() || changed.GetMetadata().GetRedirectUris()[0] != "https://agent.example.test/new-cb" {
			t.Fatalf("changed document: %v, %v", changed, err)
		}
		upd := f.eventsFor(t, id, auditv1.EventType_EVENT_TYPE_CLIENT_UPDATED)
		if len(upd) != 1 || !upd[0].GetDetails().GetFields()["consents_revoked"].GetBoolValue() {
			t.Fatalf("client.updated: %v", upd)
		}
		// Its metadata follows the document, never an operator.
		_, err = f.admin.UpdateClient(ctx, &registrationv1.UpdateClientRequest{Client: &registrationv1.Client{ClientId: id, Metadata: &registrationv1.ClientMetadata{ClientName: "x"}}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"metadata.client_name"}}})
		wantStatus(t, err, codes.FailedPrecondition, "ERROR_REASON_CLIENT_METADATA_FROM_DOCUMENT")
		// The token service authenticates it as a public client.
		a, err := f.token.AuthenticateClient(ctx, &registrationv1.AuthenticateClientRequest{ClientId: id, AuthMethod: authNone})
		if err != nil || a.GetClient().GetClientId() != id {
			t.Fatalf("authenticate: %v %v", a, err)
		}
		_, err = f.token.AuthenticateClient(ctx, &registrationv1.AuthenticateClientRequest{ClientId: id, AuthMethod: authBasic, ClientSecret: "x"})
		wantStatus(t, err, codes.Unauthenticated, "ERROR_REASON_AUTH_METHOD_MISMATCH")
	})

	t.Run("stale copy served while the site fails, within bounds", func(t *testing.T) {
		const id = "https://agent.example.test/clients/flaky.json"
		f.site.json("/clients/flaky.json", cimdDoc(id, "https://agent.example.test/cb"), "Cache-Control", "max-age=300")
		if _, err := resolve(id); err != nil {
			t.Fatal(err)
		}
		f.site.handle("/clients/flaky.json", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
		f.clk.Advance(6 * time.Minute)
		if _, err := resolve(id); err != nil {
			t.Fatalf("stale copy not served: %v", err)
		}
		f.clk.Advance(25 * time.Hour)
		_, err := resolve(id)
		wantStatus(t, err, codes.Unavailable, "ERROR_REASON_CIMD_FETCH_FAILED")
	})

	t.Run("trusted domain verifies, but never loopback-only clients", func(t *testing.T) {
		const app = "https://trusted.example.test/app.json"
		f.site.json("/app.json", cimdDoc(app, "https://trusted.example.test/cb"))
		c, err := resolve(app)
		if err != nil || c.GetVerification().GetStatus() != verified || c.GetVerification().GetMethod() != registrationv1.VerificationMethod_VERIFICATION_METHOD_TRUSTED_CIMD_DOMAIN {
			t.Fatalf("trusted: %v %v", c.GetVerification(), err)
		}
		const local = "https://trusted.example.test/local.json"
		f.site.json("/local.json", cimdDoc(local, "http://127.0.0.1/cb", "http://localhost:8080/cb"))
		c, err = resolve(local)
		if err != nil || c.GetVerification().GetStatus() != unverified || !c.GetLocalRedirectUrisOnly() {
			t.Fatalf("loopback-only on a trusted domain: %v %v", c.GetVerification(), err)
		}
		// An operator's suspension survives re-fetches.
		if _, err := f.admin.SetClientVerification(ctx, &registrationv1.SetClientVerificationRequest{ClientId: app, Status: suspended, Reason: "incident"}); err != nil {
			t.Fatal(err)
		}
		f.site.json("/app.json", cimdDoc(app, "https://trusted.example.test/cb2"))
		f.clk.Advance(6 * time.Minute)
		c, err = resolve(app)
		if err != nil || c.GetVerification().GetStatus() != suspended {
			t.Fatalf("after refetch: %v %v", c.GetVerification(), err)
		}
	})

	t.Run("host outside the trusted-domain policy: no DNS, no connection", func(t *testing.T) {
		_, err := resolve("https://agent.evil.test/client.json")
		wantStatus(t, err, codes.PermissionDenied, "ERROR_REASON_CIMD_DOMAIN_NOT_TRUSTED")
		if f.dns.looked("agent.evil.test") {
			t.Fatal("an untrusted host was looked up")
		}
	})

	t.Run("SSRF attempts are refused before any connection", func(t *testing.T) {
		before := f.dial.dialed()
		for _, id := range []string{
			"https://loopback.example.test/client.json", // resolves to 127.0.0.1
			"https://private.example.test/client.json",  // resolves to 10.0.0.1
			"https://metadata.example.test/client.json", // resolves to 169.254.169.254
			"https://mixed.example.test/client.json",    // one public, one private address
			"https://127.0.0.1/client.json",             // literal loopback
			"https://169.254.169.254/latest/meta-data",  // literal metadata service
			"https://agent.example.test:2379/client.json",
		} {
			_, err := resolve(id)
			wantStatus(t, err, codes.FailedPrecondition, "ERROR_REASON_CIMD_FETCH_REFUSED")
		}
		for _, id := range []string{
			"http://agent.example.test/client.json", // not https
			"https://agent.example.test",            // no path
			"https://agent.example.test/",           // no path
			"https://user@agent.example.test/c.json",
			"https://agent.example.test/../c.json",
		} {
			_, err := resolve(id)
			wantStatus(t, err, codes.FailedPrecondition, "ERROR_REASON_CIMD_FETCH_REFUSED")
		}
		if after := f.dial.dialed(); len(after) != len(before) {
			t.Fatalf("SSRF attempts reached the dialer: %v", after[len(before):])
		}
	})

	t.Run("redirect to another host is not followed", func(t *testing.T) {
		const id = "https://agent.example.test/clients/moved.json"
		f.site.handle("/clients/moved.json", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://other.example.test/elsewhere.json", http.StatusFound)
		})
		f.site.json("/elsewhere.json", cimdDoc(id, "https://agent.example.test/cb"))
		_, err := resolve(id)
		wantStatus(t, err, codes.FailedPrecondition, "ERROR_REASON_CIMD_FETCH_REFUSED")
		if f.site.hitCount("/elsewhere.json") != 0 {
			t.Fatal("the redirect was followed")
		}
	})

	t.Run("oversized documents", func(t *testing.T) {
		const id = "https://agent.example.test/clients/big.json"
		big := `{"client_id":"` + id + `","client_name":"` + strings.Repeat("a", 6000) + `","redirect_uris":["https://agent.example.test/cb"]}`
		f.site.json("/clients/big.json", big)
		_, err := resolve(id)
		wantStatus(t, err, codes.FailedPrecondition, "ERROR_REASON_CIMD_DOCUMENT_INVALID")
		// Also without Content-Length (chunked, the size only known by reading).
		const chunked = "https://agent.example.test/clients/chunked.json"
		f.site.handle("/clients/chunked.json", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			for range 12 {
				_, _ = w.Write([]byte(strings.Repeat(" ", 512)))
				w.(http.Flusher).Flush()
			}
		})
		_, err = resolve(chunked)
		wantStatus(t, err, codes.FailedPrecondition, "ERROR_REASON_CIMD_DOCUMENT_INVALID")
	})

	t.Run("a document that never finishes", func(t *testing.T) {
		const id = "https://agent.example.test/clients/endless.json"
		f.site.handle("/clients/endless.json", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"client_id":"`))
			w.(http.Flusher).Flush()
			<-r.Context().Done() // until the fetcher gives up
		})
		_, err := resolve(id)
		wantStatus(t, err, codes.Unavailable, "ERROR_REASON_CIMD_FETCH_FAILED")
	})

	t.Run("invalid documents", func(t *testing.T) {
		for path, doc := range map[string]string{
			"/bad/mismatch.json": cimdDoc("https://agent.example.test/somebody-else.json", "https://agent.example.test/cb"),
			"/bad/secret.json":   `{"client_id":"https://agent.example.test/bad/secret.json","client_name":"A","redirect_uris":["https://agent.example.test/cb"],"token_endpoint_auth_method":"client_secret_basic"}`,
			"/bad/noname.json":   `{"client_id":"https://agent.example.test/bad/noname.json","redirect_uris":["https://agent.example.test/cb"]}`,
			"/bad/noredir.json":  `{"client_id":"https://agent.example.test/bad/noredir.json","client_name":"A"}`,
			"/bad/reserved.json": `{"client_id":"https://agent.example.test/bad/reserved.json","client_name":"A","redirect_uris":["https://agent.example.test/cb"],"scope":"mcpid:admin"}`,
			"/bad/array.json":    `[]`,
		} {
			f.site.json(path, doc)
			_, err := resolve("https://agent.example.test" + path)
			wantStatus(t, err, codes.FailedPrecondition, "ERROR_REASON_CIMD_DOCUMENT_INVALID")
		}
		f.site.handle("/bad/html.json", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte(cimdDoc("https://agent.example.test/bad/html.json", "https://agent.example.test/cb")))
		})
		_, err := resolve("https://agent.example.test/bad/html.json")
		wantStatus(t, err, codes.FailedPrecondition, "ERROR_REASON_CIMD_DOCUMENT_INVALID")
		_, err = resolve("https://agent.example.test/missing.json")
		wantStatus(t, err, codes.Unavailable, "ERROR_REASON_CIMD_FETCH_FAILED")
		// Failed resolutions of AuthenticateClient are invalid_client.
		_, err = f.token.AuthenticateClient(ctx, &registrationv1.AuthenticateClientRequest{ClientId: "https://agent.example.test/bad/secret.json", AuthMethod: authNone})
		wantStatus(t, err, codes.Unauthenticated, "ERROR_REASON_CIMD_DOCUMENT_INVALID")
		if stored := f.keys(t, "%2Fbad%2F"); len(stored) != 0 {
			t.Fatalf("invalid documents were stored: %v", stored)
		}
	})
}

// TestCIMDAllowPrivate: an installation whose documents live on an internal
// network may allow private addresses; cloud metadata stays refused.
func TestCIMDAllowPrivate(t *testing.T) {
	f := newFetchEnv(t, func(c *server.Config) { c.FetchAllowPrivate = true })
	ctx := tctx(t)
	before := len(f.dial.dialed())
	_, err := f.token.ResolveClient(ctx, &registrationv1.ResolveClientRequest{ClientId: "https://metadata.example.test/client.json"})
	wantStatus(t, err, codes.FailedPrecondition, "ERROR_REASON_CIMD_FETCH_REFUSED")
	if len(f.dial.dialed()) != before {
		t.Fatal("the metadata address was dialled")
	}
	// A private address passes the policy and reaches the dialer (which,
	// being the test's, refuses it: nothing leaves loopback).
	_, err = f.token.ResolveClient(ctx, &registrationv1.ResolveClientRequest{ClientId: "https://private.example.test/client.json"})
	wantStatus(t, err, codes.Unavailable, "ERROR_REASON_CIMD_FETCH_FAILED")
	if d := f.dial.dialed(); len(d) != before+1 || d[len(d)-1] != "10.0.0.1:443" {
		t.Fatalf("dials: %v", d)
	}
}
