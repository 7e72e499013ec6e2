package server_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/jose"
	"github.com/mcpid/mcpid/services/registration/server"
)

const (
	issuer       = "http://127.0.0.1:8080"
	tokenURL     = issuer + "/oauth2/token"
	jwtBearerURN = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

func newKey(t testing.TB, alg string) *jose.SigningKey {
	t.Helper()
	k, err := jose.GenerateKey(alg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func jwksJSON(t testing.TB, keys ...*jose.SigningKey) string {
	t.Helper()
	b, err := jose.NewKeySet(keys...).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// assertion signs RFC 7523 claims for client; edit adjusts them.
func assertion(t testing.TB, key *jose.SigningKey, client string, now time.Time, edit func(map[string]any)) string {
	t.Helper()
	claims := map[string]any{
		"iss": client, "sub": client, "aud": issuer,
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
		"jti": rand.Text(),
	}
	if edit != nil {
		edit(claims)
	}
	s, err := jose.Sign(key, claims, "JWT")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jwtAuth(client, a string) *registrationv1.AuthenticateClientRequest {
	return &registrationv1.AuthenticateClientRequest{ClientId: client, AuthMethod: authJWT, ClientAssertionType: jwtBearerURN, ClientAssertion: a, EndpointUrl: tokenURL}
}

func TestAuthenticateClient(t *testing.T) {
	f := newFetchEnv(t, nil)
	ctx := tctx(t)
	auth := func(req *registrationv1.AuthenticateClientRequest) (*registrationv1.AuthenticateClientResponse, error) {
		return f.token.AuthenticateClient(ctx, req)
	}

	t.Run("client secrets", func(t *testing.T) {
		basic := f.register(t, `{"redirect_uris":["https://a.example/cb"]}`)
		post := f.register(t, `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"client_secret_post"}`)
		pub := f.register(t, `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"none"}`)
		bid, bsec := str(basic, "client_id"), str(basic, "client_secret")
		a, err := auth(&registrationv1.AuthenticateClientRequest{ClientId: bid, AuthMethod: authBasic, ClientSecret: bsec})
		if err != nil || a.GetClient().GetClientId() != bid || a.GetPreviousSecretUsed() {
			t.Fatalf("basic: %v %v", a, err)
		}
		got, _ := f.admin.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: bid})
		if got.GetClient().GetLastUsedTime() == nil {
			t.Fatal("use not recorded")
		}
		if _, err := auth(&registrationv1.AuthenticateClientRequest{ClientId: str(post, "client_id"), AuthMethod: authPost, ClientSecret: str(post, "client_secret")}); err != nil {
			t.Fatalf("post: %v", err)
		}
		if _, err := auth(&registrationv1.AuthenticateClientRequest{ClientId: str(pub, "client_id"), AuthMethod: authNone}); err != nil {
			t.Fatalf("none: %v", err)
		}
		for name, c := range map[string]struct {
			req    *registrationv1.AuthenticateClientRequest
			code   codes.Code
			reason string
		}{
			"wrong secret":       {&registrationv1.AuthenticateClientRequest{ClientId: bid, AuthMethod: authBasic, ClientSecret: bsec + "x"}, codes.Unauthenticated, "ERROR_REASON_INVALID_CLIENT_SECRET"},
			"empty secret":       {&registrationv1.AuthenticateClientRequest{ClientId: bid, AuthMethod: authBasic}, codes.Unauthenticated, "ERROR_REASON_INVALID_CLIENT_SECRET"},
			"post for basic":     {&registrationv1.AuthenticateClientRequest{ClientId: bid, AuthMethod: authPost, ClientSecret: bsec}, codes.Unauthenticated, "ERROR_REASON_AUTH_METHOD_MISMATCH"},
			"none for secret":    {&registrationv1.AuthenticateClientRequest{ClientId: bid, AuthMethod: authNone}, codes.Unauthenticated, "ERROR_REASON_AUTH_METHOD_MISMATCH"},
			"secret for public":  {&registrationv1.AuthenticateClientRequest{ClientId: str(pub, "client_id"), AuthMethod: authBasic, ClientSecret: "x"}, codes.Unauthenticated, "ERROR_REASON_AUTH_METHOD_MISMATCH"},
			"unknown client":     {&registrationv1.AuthenticateClientRequest{ClientId: "nobody", AuthMethod: authNone}, codes.Unauthenticated, "ERROR_REASON_CLIENT_NOT_FOUND"},
			"no method":          {&registrationv1.AuthenticateClientRequest{ClientId: bid, ClientSecret: bsec}, codes.InvalidArgument, ""},
			"mixed credentials":  {&registrationv1.AuthenticateClientRequest{ClientId: bid, AuthMethod: authBasic, ClientSecret: bsec, ClientAssertion: "x"}, codes.InvalidArgument, ""},
			"no client_id":       {&registrationv1.AuthenticateClientRequest{AuthMethod: authNone}, codes.InvalidArgument, ""},
			"client_id too long": {&registrationv1.AuthenticateClientRequest{ClientId: strings.Repeat("a", 2049), AuthMethod: authNone}, codes.InvalidArgument, ""},
		} {
			_, err := auth(c.req)
			if err == nil {
				t.Errorf("%s: authenticated", name)
				continue
			}
			wantStatus(t, err, c.code, c.reason)
		}
		// An expired secret is told apart, and rotation revives the client.
		r, err := f.admin.CreateClient(ctx, &registrationv1.CreateClientRequest{ClientId: "short-secret", Metadata: webApp("https://a.example/cb"), SecretLifetime: durationpb.New(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		f.clk.Advance(2 * time.Hour)
		defer f.clk.Advance(-2 * time.Hour)
		_, err = auth(&registrationv1.AuthenticateClientRequest{ClientId: "short-secret", AuthMethod: authBasic, ClientSecret: r.GetClientSecret()})
		wantStatus(t, err, codes.Unauthenticated, "ERROR_REASON_CLIENT_SECRET_EXPIRED")
		c, _ := f.admin.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: "short-secret"})
		if c.GetClient().GetSecret().GetHashPresent() {
			t.Fatal("an expired secret is reported usable")
		}
		rot, err := f.admin.RotateClientSecret(ctx, &registrationv1.RotateClientSecretRequest{ClientId: "short-secret"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := auth(&registrationv1.AuthenticateClientRequest{ClientId: "short-secret", AuthMethod: authBasic, ClientSecret: rot.GetClientSecret()}); err != nil {
			t.Fatalf("after rotation: %v", err)
		}
	})

	t.Run("private_key_jwt with jwks", func(t *testing.T) {
		key := newKey(t, jose.ES256)
		m := f.register(t, `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":`+jwksJSON(t, key)+`}`)
		id := str(m, "client_id")
		if m["client_secret"] != nil {
			t.Fatal("private_key_jwt client got a secret")
		}
		now := f.clk.Now()
		a := assertion(t, key, id, now, nil)
		if _, err := auth(jwtAuth(id, a)); err != nil {
			t.Fatalf("valid assertion: %v", err)
		}
		_, err := auth(jwtAuth(id, a))
		wantStatus(t, err, codes.Unauthenticated, "ERROR_REASON_CLIENT_ASSERTION_REPLAYED")
		// client_id may be omitted: it is the assertion's sub.
		if r, err := auth(jwtAuth("", assertion(t, key, id, now, nil))); err != nil || r.GetClient().GetClientId() != id {
			t.Fatalf("client_id from sub: %v %v", r, err)
		}
		other := newKey(t, jose.ES256)
		bad := map[string]*registrationv1.AuthenticateClientRequest{
			"wrong aud":        jwtAuth(id, assertion(t, key, id, now, func(c map[string]any) { c["aud"] = "https://elsewhere.example" })),
			"token URL as aud": jwtAuth(id, assertion(t, key, id, now, func(c map[string]any) { c["aud"] = tokenURL })),
			"wrong sub":        jwtAuth(id, assertion(t, key, id, now, func(c map[string]any) { c["sub"] = "someone" })),
			"wrong iss":        jwtAuth(id, assertion(t, key, id, now, func(c map[string]any) { c["iss"] = "someone" })),
			"long lived":       jwtAuth(id, assertion(t, key, id, now, func(c map[string]any) { c["exp"] = now.Add(10 * time.Minute).Unix() })),
			"expired": jwtAuth(id, assertion(t, key, id, now, func(c map[string]any) {
				c["iat"] = now.Add(-10 * time.Minute).Unix()
				c["exp"] = now.Add(-8 * time.Minute).Unix()
			})),
			"no exp":     jwtAuth(id, assertion(t, key, id, now, func(c map[string]any) { delete(c, "exp") })),
			"no jti":     jwtAuth(id, assertion(t, key, id, now, func(c map[string]any) { delete(c, "jti") })),
			"other key":  jwtAuth(id, assertion(t, other, id, now, nil)),
			"unsigned":   jwtAuth(id, unsigned(map[string]any{"iss": id, "sub": id, "aud": issuer, "exp": now.Add(time.Minute).Unix(), "jti": "u1"})),
			"wrong type": {ClientId: id, AuthMethod: authJWT, ClientAssertionType: "urn:other", ClientAssertion: assertion(t, key, id, now, nil), EndpointUrl: tokenURL},
			"garbage":    jwtAuth(id, "a.b.c"),
		}
		for name, req := range bad {
			_, err := auth(req)
			if err == nil {
				t.Errorf("%s: authenticated", name)
				continue
			}
			wantStatus(t, err, codes.Unauthenticated, "ERROR_REASON_INVALID_CLIENT_ASSERTION")
		}
		_, err = auth(&registrationv1.AuthenticateClientRequest{ClientId: id, AuthMethod: authJWT, ClientAssertionType: jwtBearerURN, ClientAssertion: assertion(t, key, id, now, nil)})
		wantStatus(t, err, codes.InvalidArgument, "") // no endpoint_url
		_, err = auth(&registrationv1.AuthenticateClientRequest{ClientId: id, AuthMethod: authJWT, ClientSecret: "x", ClientAssertion: assertion(t, key, id, now, nil), EndpointUrl: tokenURL})
		wantStatus(t, err, codes.InvalidArgument, "") // mixed
	})

	t.Run("private_key_jwt with jwks_uri", func(t *testing.T) {
		k1, k2 := newKey(t, jose.EdDSA), newKey(t, jose.ES256)
		f.site.json("/jwks.json", jwksJSON(t, k1))
		// Registration fetches the URI to check it serves keys.
		wantOAuthError(t, f.do(t, "POST", "/oauth2/register", "", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks_uri":"https://keys.example.test/none.json"}`), 400, "invalid_client_metadata")
		wantOAuthError(t, f.do(t, "POST", "/oauth2/register", "", `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks_uri":"https://private.example.test/jwks.json"}`), 400, "invalid_client_metadata")
		m := f.register(t, `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks_uri":"https://keys.example.test/jwks.json"}`)
		id := str(m, "client_id")
		if _, err := auth(jwtAuth(id, assertion(t, k1, id, f.clk.Now(), nil))); err != nil {
			t.Fatalf("k1: %v", err)
		}
		// The client rotates to k2: an unknown kid refreshes the set (at a
		// bounded rate: not within 30 s of the last fetch).
		f.site.json("/jwks.json", jwksJSON(t, k1, k2))
		_, err := auth(jwtAuth(id, assertion(t, k2, id, f.clk.Now(), nil)))
		wantStatus(t, err, codes.Unauthenticated, "ERROR_REASON_INVALID_CLIENT_ASSERTION")
		f.clk.Advance(31 * time.Second)
		if _, err := auth(jwtAuth(id, assertion(t, k2, id, f.clk.Now(), nil))); err != nil {
			t.Fatalf("k2 after refresh: %v", err)
		}
	})
}

func TestAssertionAudienceCompat(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.AssertionAudienceCompat = true })
	key := newKey(t, jose.ES256)
	m := e.register(t, `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":`+jwksJSON(t, key)+`}`)
	id := str(m, "client_id")
	a := assertion(t, key, id, time.Now(), func(c map[string]any) { c["aud"] = []string{tokenURL} })
	if _, err := e.token.AuthenticateClient(tctx(t), jwtAuth(id, a)); err != nil {
		t.Fatalf("endpoint URL as audience with compatibility on: %v", err)
	}
}

// unsigned builds an alg "none" token.
func unsigned(claims map[string]any) string {
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	p, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p) + "."
}
