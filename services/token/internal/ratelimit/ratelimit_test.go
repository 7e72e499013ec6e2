package ratelimit

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(60, 3, func() time.Time { return now })
	for i := range 3 {
		if ok, _ := l.Allow("k"); !ok {
			t.Fatalf("attempt %d refused within the burst", i)
		}
	}
	if ok, wait := l.Allow("k"); ok || wait <= 0 || wait > time.Second {
		t.Fatalf("fourth attempt: %v, wait %v", ok, wait)
	}
	if !l.Allowed("other") {
		t.Fatal("keys are independent")
	}
	now = now.Add(time.Second)
	if !l.Allowed("k") {
		t.Fatal("a token refills per second at 60/min")
	}
	l.Take("k")
	if l.Allowed("k") {
		t.Fatal("Take consumed nothing")
	}
	if ok, _ := New(-1, 0, nil).Allow("k"); !ok {
		t.Fatal("a negative rate disables the limiter")
	}
}
