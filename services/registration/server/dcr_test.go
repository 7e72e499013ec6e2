package server_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
)

func TestDynamicRegistration(t *testing.T) {
	e := newEnv(t, nil)
	ctx := tctx(t)

	t.Run("confidential client gets the RFC 7591 response", func(t *testing.T) {
		m := e.register(t, `{"redirect_uris":["https://app.example.com/cb"],"client_name":"App"}`, "User-Agent", "agent-test/1")
		id := str(m, "client_id")
		sec := str(m, "client_secret")
		rat := str(m, "registration_access_token")
		if len(id) < 22 || len(sec) < 43 || len(rat) < 43 {
			t.Fatalf("id %q secret %q rat %q: too short for 128/256 random bits", id, sec, rat)
		}
		if _, ok := m["client_id_issued_at"].(float64); !ok {
			t.Fatalf("client_id_issued_at is not a JSON number: %v", m["client_id_issued_at"])
		}
		if v, ok := m["client_secret_expires_at"].(float64); !ok || v != 0 {
			t.Fatalf("client_secret_expires_at = %v, want the number 0", m["client_secret_expires_at"])
		}
		want := map[string]any{
			"registration_client_uri":    "http://127.0.0.1:8080/oauth2/register/" + id,
			"token_endpoint_auth_method": "client_secret_basic",
			"application_type":           "web",
			"client_name":                "App",
		}
		for k, v := range want {
			if m[k] != v {
				t.Errorf("%s = %v, want %v", k, m[k], v)
			}
		}
		if !slices.Equal(strs(m, "grant_types"), []string{"authorization_code"}) || !slices.Equal(strs(m, "response_types"), []string{"code"}) ||
			!slices.Equal(strs(m, "redirect_uris"), []string{"https://app.example.com/cb"}) {
			t.Fatalf("echoed metadata: %v", m)
		}
		// Stored only as digests: neither secret appears in etcd.
		resp, err := e.cli.Get(ctx, "/mcpid/registration/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			if strings.Contains(string(kv.Value), sec) || strings.Contains(string(kv.Value), rat) {
				t.Fatalf("a secret is stored in clear at %s", kv.Key)
			}
		}
		// The event was written with the client, with the caller's address.
		evs := e.eventsFor(t, id, auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED)
		if len(evs) != 1 {
			t.Fatalf("client.registered events: %d", len(evs))
		}
		ev := evs[0]
		if ev.GetActor().GetKind() != auditv1.ActorKind_ACTOR_KIND_CLIENT || ev.GetSourceAddress().GetValue() != "127.0.0.1" ||
			ev.GetUserAgent().GetValue() != "agent-test/1" || ev.GetDetails().GetFields()["source"].GetStringValue() != "dcr" {
			t.Fatalf("event: %v", ev)
		}
		c, err := e.admin.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: id})
		if err != nil {
			t.Fatal(err)
		}
		cl := c.GetClient()
		if cl.GetSource() != registrationv1.ClientSource_CLIENT_SOURCE_DCR || cl.GetVerification().GetStatus() != registrationv1.VerificationStatus_VERIFICATION_STATUS_UNVERIFIED ||
			cl.GetClientType() != registrationv1.ClientType_CLIENT_TYPE_CONFIDENTIAL || !cl.GetSecret().GetHashPresent() ||
			cl.GetRegistrationSourceAddress() != "127.0.0.1" || cl.GetConsentEpoch() == 0 || cl.GetExpireTime() == nil {
			t.Fatalf("stored client: %v", cl)
		}
	})

	t.Run("public native client", func(t *testing.T) {
		m := e.register(t, `{"redirect_uris":["http://127.0.0.1:51234/callback","http://[::1]/callback"],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"]}`)
		if _, ok := m["client_secret"]; ok {
			t.Fatal("public client got a secret")
		}
		if _, ok := m["client_secret_expires_at"]; ok {
			t.Fatal("public client got client_secret_expires_at")
		}
		if str(m, "application_type") != "native" {
			t.Fatalf("application_type %v, want inferred native", m["application_type"])
		}
		c, _ := e.admin.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: str(m, "client_id")})
		if !c.GetClient().GetLocalRedirectUrisOnly() || c.GetClient().GetClientType() != registrationv1.ClientType_CLIENT_TYPE_PUBLIC {
			t.Fatalf("client: %v", c.GetClient())
		}
	})

	t.Run("unknown and output-only members are ignored", func(t *testing.T) {
		m := e.register(t, `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"none","client_id":"chosen","client_secret":"mine","registration_access_token":"x","made_up":{"deep":[1]}}`)
		if str(m, "client_id") == "chosen" || m["client_secret"] != nil || str(m, "registration_access_token") == "x" {
			t.Fatalf("client chose its credentials: %v", m)
		}
	})

	t.Run("invalid metadata is refused and nothing is stored", func(t *testing.T) {
		before := len(e.keys(t, "/clients/"))
		for body, want := range map[string]string{
			`{"redirect_uris":["https://a.example/cb#frag"]}`:                                                "invalid_redirect_uri",
			`{"redirect_uris":["https://*.example.com/cb"]}`:                                                 "invalid_redirect_uri",
			`{"redirect_uris":["https://user:pw@a.example/cb"]}`:                                             "invalid_redirect_uri",
			`{"redirect_uris":["http://a.example/cb"]}`:                                                      "invalid_redirect_uri",
			`{"redirect_uris":["http://127.0.0.1/cb"],"application_type":"web"}`:                             "invalid_redirect_uri",
			`{"redirect_uris":["com.example.app:/cb"],"application_type":"web"}`:                             "invalid_redirect_uri",
			`{"redirect_uris":["myapp://cb"]}`:                                                               "invalid_redirect_uri",
			`{"client_name":"no redirect"}`:                                                                  "invalid_redirect_uri",
			`{"redirect_uris":["https://a.example/cb"],"grant_types":["implicit"]}`:                          "invalid_client_metadata",
			`{"redirect_uris":["https://a.example/cb"],"grant_types":["password"]}`:                          "invalid_client_metadata",
			`{"redirect_uris":["https://a.example/cb"],"response_types":["token"]}`:                          "invalid_client_metadata",
			`{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"client_secret_jwt"}`:    "invalid_client_metadata",
			`{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt"}`:      "invalid_client_metadata",
			`{"redirect_uris":["https://a.example/cb"],"scope":"read mcpid:admin"}`:                          "invalid_client_metadata",
			`{"grant_types":["client_credentials"],"token_endpoint_auth_method":"client_secret_post"}`:       "invalid_client_metadata",
			`{"grant_types":["client_credentials"],"token_endpoint_auth_method":"none"}`:                     "invalid_client_metadata",
			`{"redirect_uris":["https://a.example/cb"],"client_name":"` + strings.Repeat("n", 201) + `"}`:    "invalid_client_metadata",
			`{"redirect_uris":["https://a.example/cb"],"logo_uri":"http://a.example/logo.png"}`:              "invalid_client_metadata",
			`{"redirect_uris":["https://a.example/cb"],"contacts":["not an address"]}`:                       "invalid_client_metadata",
			`{"redirect_uris":["https://a.example/cb"],"application_type":"desktop"}`:                        "invalid_client_metadata",
			`{"redirect_uris":["https://a.example/cb"],"jwks_uri":"https://a.example/j","jwks":{"keys":[]}}`: "invalid_client_metadata",
			`{"redirect_uris":["https://a.example/cb"],"software_statement":"not.a.jwt"}`:                    "invalid_software_statement",
			`{"redirect_uris":"https://a.example/cb"}`:                                                       "invalid_request",
			`not json`: "invalid_request",
		} {
			r := e.do(t, http.MethodPost, "/oauth2/register", "", body)
			wantOAuthError(t, r, http.StatusBadRequest, want)
		}
		if after := len(e.keys(t, "/clients/")); after != before {
			t.Fatalf("clients %d → %d after refused registrations", before, after)
		}
	})

	t.Run("RFC 7592 read", func(t *testing.T) {
		m := e.register(t, `{"redirect_uris":["https://a.example/cb"],"client_name":"Reader"}`)
		id, rat := str(m, "client_id"), str(m, "registration_access_token")
		r := e.do(t, http.MethodGet, "/oauth2/register/"+id, rat, "")
		if r.code != http.StatusOK || r.header.Get("Cache-Control") != "no-store" {
			t.Fatalf("GET = %d %s", r.code, r.body)
		}
		got := r.json(t)
		if got["client_secret"] != nil || str(got, "registration_access_token") != rat || str(got, "client_name") != "Reader" || got["client_secret_expires_at"] != float64(0) {
			t.Fatalf("GET body: %v", got)
		}
		// Wrong, missing or foreign tokens, and unknown clients, all look alike.
		other := e.register(t, `{"redirect_uris":["https://b.example/cb"]}`)
		for name, req := range map[string][2]string{
			"wrong token":   {id, rat[:len(rat)-1] + "x"},
			"no token":      {id, ""},
			"foreign token": {id, str(other, "registration_access_token")},
			"unknown":       {"nosuchclient", rat},
			"pre-reg":       {"mcpid", rat},
		} {
			r := e.do(t, http.MethodGet, "/oauth2/register/"+req[0], req[1], "")
			wantOAuthError(t, r, http.StatusUnauthorized, "invalid_token")
			if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), `Bearer error="invalid_token"`) {
				t.Fatalf("%s: WWW-Authenticate %q", name, r.header.Get("WWW-Authenticate"))
			}
		}
	})

	t.Run("RFC 7592 update", func(t *testing.T) {
		m := e.register(t, `{"redirect_uris":["https://a.example/cb"],"client_name":"Before","scope":"crm:read"}`)
		id, rat, sec := str(m, "client_id"), str(m, "registration_access_token"), str(m, "client_secret")
		before, _ := e.admin.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: id})

		// Refusals change nothing.
		wantOAuthError(t, e.do(t, http.MethodPut, "/oauth2/register/"+id, rat, `{"client_id":"other","redirect_uris":["https://a.example/cb"]}`), 400, "invalid_client_metadata")
		wantOAuthError(t, e.do(t, http.MethodPut, "/oauth2/register/"+id, rat, `{"redirect_uris":["https://a.example/cb"]}`), 400, "invalid_client_metadata")
		wantOAuthError(t, e.do(t, http.MethodPut, "/oauth2/register/"+id, rat, `{"client_id":"`+id+`","client_secret":"wrong","redirect_uris":["https://a.example/cb"]}`), 400, "invalid_client_metadata")
		wantOAuthError(t, e.do(t, http.MethodPut, "/oauth2/register/"+id, rat, `{"client_id":"`+id+`","redirect_uris":["http://evil.example/cb"]}`), 400, "invalid_redirect_uri")
		wantOAuthError(t, e.do(t, http.MethodPut, "/oauth2/register/"+id, "bad", `{"client_id":"`+id+`","redirect_uris":["https://a.example/cb"]}`), 401, "invalid_token")
		same, _ := e.admin.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: id})
		if same.GetClient().GetEtag() != before.GetClient().GetEtag() {
			t.Fatal("a refused update changed the client")
		}

		// The body is the complete metadata: client_name and scope are reset.
		r := e.do(t, http.MethodPut, "/oauth2/register/"+id, rat, `{"client_id":"`+id+`","client_secret":"`+sec+`","redirect_uris":["https://a.example/new-cb"]}`)
		if r.code != http.StatusOK {
			t.Fatalf("PUT = %d %s", r.code, r.body)
		}
		got := r.json(t)
		if got["client_name"] != nil || got["scope"] != nil || got["client_secret"] != nil || str(got, "registration_access_token") != rat {
			t.Fatalf("PUT body: %v", got)
		}
		after, _ := e.admin.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: id})
		if after.GetClient().GetConsentEpoch() <= before.GetClient().GetConsentEpoch() {
			t.Fatalf("consent epoch %d → %d after a redirect URI change", before.GetClient().GetConsentEpoch(), after.GetClient().GetConsentEpoch())
		}
		upd := e.eventsFor(t, id, auditv1.EventType_EVENT_TYPE_CLIENT_UPDATED)
		if len(upd) != 1 || !upd[0].GetDetails().GetFields()["consents_revoked"].GetBoolValue() {
			t.Fatalf("client.updated: %v", upd)
		}

		// Switching to none deletes the secret; back to a secret method issues a new one.
		r = e.do(t, http.MethodPut, "/oauth2/register/"+id, rat, `{"client_id":"`+id+`","redirect_uris":["https://a.example/new-cb"],"token_endpoint_auth_method":"none"}`)
		if r.code != http.StatusOK {
			t.Fatalf("PUT none = %d %s", r.code, r.body)
		}
		c, _ := e.admin.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: id})
		if c.GetClient().GetSecret() != nil {
			t.Fatal("secret kept after switching to none")
		}
		r = e.do(t, http.MethodPut, "/oauth2/register/"+id, rat, `{"client_id":"`+id+`","redirect_uris":["https://a.example/new-cb"],"token_endpoint_auth_method":"client_secret_post"}`)
		got = r.json(t)
		if r.code != http.StatusOK || len(str(got, "client_secret")) < 43 || str(got, "client_secret") == sec {
			t.Fatalf("PUT client_secret_post = %d %v", r.code, got)
		}
		// A client_credentials grant it was not allowed at registration stays refused.
		wantOAuthError(t, e.do(t, http.MethodPut, "/oauth2/register/"+id, rat,
			`{"client_id":"`+id+`","grant_types":["client_credentials"],"token_endpoint_auth_method":"client_secret_post"}`), 400, "invalid_client_metadata")
	})

	t.Run("redirect change resets verification, suspension stays", func(t *testing.T) {
		m := e.register(t, `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"none"}`)
		id, rat := str(m, "client_id"), str(m, "registration_access_token")
		if _, err := e.admin.SetClientVerification(ctx, &registrationv1.SetClientVerificationRequest{ClientId: id, Status: registrationv1.VerificationStatus_VERIFICATION_STATUS_VERIFIED, Reason: "reviewed"}); err != nil {
			t.Fatal(err)
		}
		// Same redirect URIs: still verified.
		e.do(t, http.MethodPut, "/oauth2/register/"+id, rat, `{"client_id":"`+id+`","redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"none","client_name":"n"}`)
		c, _ := e.admin.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: id})
		if c.GetClient().GetVerification().GetStatus() != registrationv1.VerificationStatus_VERIFICATION_STATUS_VERIFIED {
			t.Fatal("verification lost without a redirect change")
		}
		e.do(t, http.MethodPut, "/oauth2/register/"+id, rat, `{"client_id":"`+id+`","redirect_uris":["https://a.example/other"],"token_endpoint_auth_method":"none"}`)
		c, _ = e.admin.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: id})
		v := c.GetClient().GetVerification()
		if v.GetStatus() != registrationv1.VerificationStatus_VERIFICATION_STATUS_UNVERIFIED || v.GetUpdatedBy() != "service:registration" || v.GetReason() != "redirect_uris changed" {
			t.Fatalf("after redirect change: %v", v)
		}
		if len(e.eventsFor(t, id, auditv1.EventType_EVENT_TYPE_CLIENT_UNVERIFIED)) != 1 {
			t.Fatal("no client.unverified event")
		}
		if _, err := e.admin.SetClientVerification(ctx, &registrationv1.SetClientVerificationRequest{ClientId: id, Status: registrationv1.VerificationStatus_VERIFICATION_STATUS_SUSPENDED, Reason: "abuse"}); err != nil {
			t.Fatal(err)
		}
		e.do(t, http.MethodPut, "/oauth2/register/"+id, rat, `{"client_id":"`+id+`","redirect_uris":["https://a.example/third"],"token_endpoint_auth_method":"none"}`)
		c, _ = e.admin.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: id})
		if c.GetClient().GetVerification().GetStatus() != registrationv1.VerificationStatus_VERIFICATION_STATUS_SUSPENDED {
			t.Fatal("suspension lifted by an RFC 7592 update")
		}
	})

	t.Run("RFC 7592 delete", func(t *testing.T) {
		m := e.register(t, `{"redirect_uris":["https://a.example/cb"]}`)
		id, rat := str(m, "client_id"), str(m, "registration_access_token")
		wantOAuthError(t, e.do(t, http.MethodDelete, "/oauth2/register/"+id, "wrong", ""), 401, "invalid_token")
		r := e.do(t, http.MethodDelete, "/oauth2/register/"+id, rat, "")
		if r.code != http.StatusNoContent || r.body != "" {
			t.Fatalf("DELETE = %d %q", r.code, r.body)
		}
		wantOAuthError(t, e.do(t, http.MethodGet, "/oauth2/register/"+id, rat, ""), 401, "invalid_token")
		if _, err := e.admin.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: id}); err == nil {
			t.Fatal("deleted client still there")
		}
		if len(e.eventsFor(t, id, auditv1.EventType_EVENT_TYPE_CLIENT_DELETED)) != 1 {
			t.Fatal("no client.deleted event")
		}
		if len(e.keys(t, "/revocations/")) == 0 {
			t.Fatal("no pending grant revocation recorded")
		}
	})

	t.Run("largest metadata fits its event", func(t *testing.T) {
		uris := make([]string, 20)
		for i := range uris {
			uris[i] = `"https://app.example.com/` + strings.Repeat(string(rune('a'+i)), 2000) + `"`
		}
		m := e.register(t, `{"redirect_uris":[`+strings.Join(uris, ",")+`],"client_name":"`+strings.Repeat("é", 200)+`"}`)
		evs := e.eventsFor(t, str(m, "client_id"), auditv1.EventType_EVENT_TYPE_CLIENT_REGISTERED)
		if len(evs) != 1 || !evs[0].GetDetails().GetFields()["redirect_uris_truncated"].GetBoolValue() {
			t.Fatalf("event: %v", evs)
		}
	})

	t.Run("optional initial access token", func(t *testing.T) {
		wantOAuthError(t, e.do(t, http.MethodPost, "/oauth2/register", "made-up-token", `{"redirect_uris":["https://a.example/cb"]}`), 401, "invalid_token")
		r := e.do(t, http.MethodPost, "/oauth2/register", "", `{"redirect_uris":["https://a.example/cb"]}`, "Authorization", "Basic eDp5")
		wantOAuthError(t, r, 401, "invalid_token")
	})

	t.Run("direct gRPC registration is refused", func(t *testing.T) {
		_, err := e.admin.RegisterClient(ctx, &registrationv1.RegisterClientRequest{})
		wantStatus(t, err, codes.PermissionDenied, "")
	})
}
