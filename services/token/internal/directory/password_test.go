package directory

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestHashAndVerify(t *testing.T) {
	h, err := NewHasher(Argon2Params{MemoryKiB: 1024, Time: 1, Threads: 1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	enc, err := h.Hash(ctx, "a long enough password")
	if err != nil || !strings.HasPrefix(enc, "$argon2id$v=19$m=1024,t=1,p=1$") {
		t.Fatalf("Hash: %q %v", enc, err)
	}
	if ok, err := h.Verify(ctx, enc, "a long enough password"); !ok || err != nil {
		t.Fatalf("Verify(right) = %v %v", ok, err)
	}
	if ok, _ := h.Verify(ctx, enc, "a long enough passworD"); ok {
		t.Fatal("Verify(wrong) = true")
	}
	if ok, err := h.Verify(ctx, "", "anything"); ok || err != nil {
		t.Fatalf("Verify(no hash) = %v %v", ok, err)
	}
	if _, err := h.Verify(ctx, "$argon2id$v=19$m=999999999,t=1,p=1$AAAA$AAAA", "x"); err == nil {
		t.Fatal("absurd parameters accepted")
	}
}

func TestHashingIsBounded(t *testing.T) {
	h, err := NewHasher(Argon2Params{MemoryKiB: 1024, Time: 1, Threads: 1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	h.slots <- struct{}{} // the only slot is taken
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := h.Hash(ctx, "a long enough password"); err == nil || !strings.Contains(err.Error(), ErrBusy.Error()) {
		t.Fatalf("Hash while saturated: %v", err)
	}
	<-h.slots
}

func TestPasswordPolicy(t *testing.T) {
	for pw, ok := range map[string]bool{
		"short":                  false,
		strings.Repeat("x", 12):  true,
		strings.Repeat("é", 12):  true, // code points, not bytes
		strings.Repeat("x", 129): false,
		"alice-the-user":         false, // equals the username
		"ALICE@EXAMPLE.COM":      false, // equals the email, any case
	} {
		err := CheckPassword(pw, "alice-the-user", "alice@example.com")
		if (err == nil) != ok {
			t.Errorf("CheckPassword(%q) = %v", pw, err)
		}
	}
}
