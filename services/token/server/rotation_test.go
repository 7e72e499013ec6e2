package server_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/services/token/server"
)

func keyByKid(t testing.TB, e *env, kid string) *tokenv1.SigningKey {
	t.Helper()
	resp, err := e.grpcTok.ListSigningKeys(context.Background(), &tokenv1.ListSigningKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range resp.GetKeys() {
		if k.GetKid() == kid {
			return k
		}
	}
	t.Fatalf("no key %s in %v", kid, resp)
	return nil
}

func kidOf(t testing.TB, tok string) string {
	h, _ := claims(t, tok)
	return h["kid"].(string)
}

// TestSigningKeyRotation: a rotation publishes the next key first and only
// signs with it one JWKS cache lifetime later; tokens of the old key keep
// verifying (introspection and a policy replica) until they expire, after
// which the old key leaves the JWKS. An emergency rotation withdraws every
// other key at once.
func TestSigningKeyRotation(t *testing.T) {
	const lead = 2 * time.Second
	e := startEnv(t, func(o *envOptions) {
		o.tweak = func(_ *env, c *server.Config) { c.JWKSMaxAge = lead; c.SigningKeyRotation = -1 }
	})
	ctx := context.Background()
	pol := e.startPolicy(t, e.srv.GRPCAddr().String(), time.Second)
	oldTok := e.ccToken(t, clientMachine, secretMachine, resCRM)
	oldKid := kidOf(t, oldTok)
	pol.waitAllow(t, oldTok)

	_, err := e.grpcTok.RotateSigningKey(ctx, &tokenv1.RotateSigningKeyRequest{Alg: tokenv1.SigningAlgorithm_SIGNING_ALGORITHM_RS256})
	reasonIs(t, err, codes.FailedPrecondition, tokenv1.ErrorReason_ERROR_REASON_SIGNING_ALGORITHM_NOT_ENABLED.String())

	resp, err := e.grpcTok.RotateSigningKey(ctx, &tokenv1.RotateSigningKeyRequest{Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	next := resp.GetKey()
	if next.GetState() != tokenv1.SigningKeyState_SIGNING_KEY_STATE_PENDING ||
		next.GetActivateTime().AsTime().Sub(next.GetCreateTime().AsTime()) < lead {
		t.Fatalf("new key %v: want PENDING, activating at least %v after publication", next, lead)
	}
	// Published at once, at every replica's JWKS.
	if kids := jwksKids(t, e.issuer); !slices.Contains(kids, next.GetKid()) || !slices.Contains(kids, oldKid) {
		t.Fatalf("JWKS right after rotation = %v", kids)
	}
	_, err = e.grpcTok.RotateSigningKey(ctx, &tokenv1.RotateSigningKeyRequest{})
	reasonIs(t, err, codes.FailedPrecondition, tokenv1.ErrorReason_ERROR_REASON_SIGNING_KEY_ROTATION_IN_PROGRESS.String())

	// Tokens issued until the key activates are signed by the old key;
	// the first signed by the new one was issued no earlier than its
	// publication plus the lead.
	var newTok string
	deadline := time.Now().Add(30 * time.Second)
	for newTok == "" {
		tok := e.ccToken(t, clientMachine, secretMachine, resCRM)
		switch kid := kidOf(t, tok); kid {
		case oldKid:
		case next.GetKid():
			newTok = tok
		default:
			t.Fatalf("token signed by unknown key %s", kid)
		}
		if time.Now().After(deadline) {
			t.Fatal("the new key never started signing")
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, c := claims(t, newTok)
	iat := time.Unix(int64(c["iat"].(float64)), 0)
	if iat.Before(next.GetCreateTime().AsTime().Add(lead).Truncate(time.Second)) {
		t.Fatalf("new key signed at %v, published at %v: before one JWKS lifetime", iat, next.GetCreateTime().AsTime())
	}
	if k := keyByKid(t, e, next.GetKid()); k.GetState() != tokenv1.SigningKeyState_SIGNING_KEY_STATE_ACTIVE {
		t.Fatalf("new key %v", k)
	}
	old := keyByKid(t, e, oldKid)
	if old.GetState() != tokenv1.SigningKeyState_SIGNING_KEY_STATE_RETIRING ||
		old.GetRemoveTime().AsTime().Sub(old.GetRetireTime().AsTime()) != server.DefaultAccessTokenTTL {
		t.Fatalf("old key %v: want RETIRING until its tokens expire", old)
	}
	// Both generations verify: at introspection and at the policy service.
	for _, tok := range []string{oldTok, newTok} {
		if m := introspectAs(t, e, mcpParams(), tok); m["active"] != true {
			t.Fatalf("introspection after rotation: %v", m)
		}
		pol.waitAllow(t, tok)
	}

	// Once the old key's tokens have expired it leaves the JWKS.
	e.clock.advance(server.DefaultAccessTokenTTL + time.Second)
	e.waitFor("old key retired", func() bool {
		return keyByKid(t, e, oldKid).GetState() == tokenv1.SigningKeyState_SIGNING_KEY_STATE_RETIRED &&
			!slices.Contains(jwksKids(t, e.issuer), oldKid)
	})

	// Emergency: a new key signs at once; the previous one is withdrawn.
	em, err := e.grpcTok.RotateSigningKey(ctx, &tokenv1.RotateSigningKeyRequest{Emergency: true, Reason: "compromise"})
	if err != nil || em.GetKey().GetState() != tokenv1.SigningKeyState_SIGNING_KEY_STATE_ACTIVE {
		t.Fatalf("emergency rotation = %v, %v", em, err)
	}
	if k := keyByKid(t, e, next.GetKid()); k.GetState() != tokenv1.SigningKeyState_SIGNING_KEY_STATE_RETIRED {
		t.Fatalf("previous key after emergency rotation: %v", k)
	}
	e.waitFor("emergency key signs", func() bool {
		return kidOf(t, e.ccToken(t, clientMachine, secretMachine, resCRM)) == em.GetKey().GetKid()
	})
	if kids := jwksKids(t, e.issuer); slices.Contains(kids, next.GetKid()) {
		t.Fatalf("withdrawn key still published: %v", kids)
	}
}
