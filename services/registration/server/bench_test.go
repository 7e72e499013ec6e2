package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/jose"
)

// BenchmarkRegisterClient measures RFC 7591 registration end to end: HTTP
// through the edge and gateway, validation, one etcd transaction (client,
// expiry marker on its lease, outbox event).
func BenchmarkRegisterClient(b *testing.B) {
	e := newEnv(b, nil)
	client := &http.Client{}
	body := `{"redirect_uris":["http://127.0.0.1/callback"],"token_endpoint_auth_method":"none","client_name":"bench"}`
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, e.base+"/oauth2/register", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

// BenchmarkAuthenticateClient measures AuthenticateClient as the token
// service calls it: gRPC over mTLS, one linearizable etcd read, the check.
// private_key_jwt adds signature verification and the single-use jti
// transaction (the assertions are signed before the timer starts).
func BenchmarkAuthenticateClient(b *testing.B) {
	e := newEnv(b, nil)
	ctx := context.Background()
	sec := e.register(b, `{"redirect_uris":["https://a.example/cb"]}`)
	key, err := jose.GenerateKey(jose.ES256, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	pkj := e.register(b, `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":`+jwksJSON(b, key)+`}`)

	b.Run("client_secret_basic", func(b *testing.B) {
		req := &registrationv1.AuthenticateClientRequest{ClientId: str(sec, "client_id"), AuthMethod: authBasic, ClientSecret: str(sec, "client_secret")}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e.token.AuthenticateClient(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("private_key_jwt", func(b *testing.B) {
		id := str(pkj, "client_id")
		reqs := make([]*registrationv1.AuthenticateClientRequest, b.N)
		for i := range reqs {
			reqs[i] = jwtAuth(id, assertion(b, key, id, time.Now(), func(c map[string]any) { c["jti"] = fmt.Sprintf("bench-%d-%d", b.N, i) }))
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if _, err := e.token.AuthenticateClient(ctx, reqs[i]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
