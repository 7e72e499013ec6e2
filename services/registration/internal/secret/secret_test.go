package secret_test

import (
	"encoding/base64"
	"testing"

	"github.com/mcpid/mcpid/services/registration/internal/secret"
)

func TestGenerateHas256RandomBits(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		s := secret.Generate()
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil || len(b) != 32 {
			t.Fatalf("Generate() = %q: %d bytes, %v", s, len(b), err)
		}
		if seen[s] {
			t.Fatalf("Generate repeated %q", s)
		}
		seen[s] = true
	}
}

func TestDigestMatches(t *testing.T) {
	s := secret.Generate()
	d := secret.Hash(s)
	if !d.Matches(s) {
		t.Fatal("digest does not match its secret")
	}
	for _, other := range []string{"", s[:len(s)-1], s + "x", secret.Generate()} {
		if d.Matches(other) {
			t.Fatalf("digest matches %q", other)
		}
	}
	if secret.Digest(nil).Matches("") || secret.Digest([]byte{1, 2}).Matches("") {
		t.Fatal("an empty or short digest matched")
	}
	if len(d.Hex()) != 64 {
		t.Fatalf("Hex() = %q", d.Hex())
	}
}
