package auditemit_test

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpid/mcpid/lib/auditemit"
)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func TestIDFormatAndTime(t *testing.T) {
	// The ULID specification's example: 1469922850259 ms is "01ARZ3NDEK".
	at := time.UnixMilli(1469922850259)
	g := auditemit.NewIDGenerator(fixedClock(at), nil)
	id, err := g.NewID()
	if err != nil {
		t.Fatal(err)
	}
	if len(id) != auditemit.IDLen || !strings.HasPrefix(id, "01ARZ3NDEK") {
		t.Fatalf("id = %q, want 26 characters starting with 01ARZ3NDEK", id)
	}
	for _, c := range id {
		if !strings.ContainsRune("0123456789ABCDEFGHJKMNPQRSTVWXYZ", c) {
			t.Fatalf("id %q has %q, not in the Crockford alphabet", id, c)
		}
	}
	got, err := auditemit.IDTime(id)
	if err != nil || !got.Equal(at) {
		t.Fatalf("IDTime(%q) = %v, %v; want %v", id, got, err, at)
	}
}

func TestIDsIncreaseWithinAMillisecond(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_000)
	g := auditemit.NewIDGenerator(fixedClock(at), nil)
	prev := ""
	for i := range 1000 {
		id, err := g.NewID()
		if err != nil {
			t.Fatal(err)
		}
		if id <= prev {
			t.Fatalf("id %d = %q, not after %q", i, id, prev)
		}
		if tm, _ := auditemit.IDTime(id); !tm.Equal(at) {
			t.Fatalf("id %q has time %v, want %v", id, tm, at)
		}
		prev = id
	}
}

func TestIDsSortByTime(t *testing.T) {
	base := time.UnixMilli(1_700_000_000_000)
	var ids []string
	for i := range 50 {
		// A new generator each time: ordering across milliseconds comes from
		// the time bits alone, not from a generator's memory.
		g := auditemit.NewIDGenerator(fixedClock(base.Add(time.Duration(i)*time.Millisecond)), nil)
		id, err := g.NewID()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if !slices.IsSorted(ids) {
		t.Fatalf("ids of increasing times do not sort: %v", ids)
	}
}

func TestIDClockSteppingBackStillIncreases(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_000)
	now := at
	g := auditemit.NewIDGenerator(func() time.Time { return now }, nil)
	first, err := g.NewID()
	if err != nil {
		t.Fatal(err)
	}
	now = at.Add(-time.Second)
	second, err := g.NewID()
	if err != nil {
		t.Fatal(err)
	}
	if second <= first {
		t.Fatalf("after the clock stepped back: %q is not after %q", second, first)
	}
	if tm, _ := auditemit.IDTime(second); !tm.Equal(at) {
		t.Fatalf("second id time = %v, want the last time %v", tm, at)
	}
}

// allOnes is a randomness source of 0xFF bytes: the first id's random part
// is the largest there is, so the next one in the same millisecond overflows.
type allOnes struct{}

func (allOnes) Read(p []byte) (int, error) {
	copy(p, bytes.Repeat([]byte{0xFF}, len(p)))
	return len(p), nil
}

func TestIDRandomOverflowBorrowsNextMillisecond(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_000)
	g := auditemit.NewIDGenerator(fixedClock(at), allOnes{})
	first, err := g.NewID()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(first, strings.Repeat("Z", 16)) {
		t.Fatalf("first id %q: want a random part of all ones", first)
	}
	second, err := g.NewID()
	if err != nil {
		t.Fatal(err)
	}
	if second <= first {
		t.Fatalf("%q is not after %q", second, first)
	}
	if tm, _ := auditemit.IDTime(second); !tm.Equal(at.Add(time.Millisecond)) {
		t.Fatalf("second id time = %v, want %v", tm, at.Add(time.Millisecond))
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestIDRandomnessFailure(t *testing.T) {
	g := auditemit.NewIDGenerator(nil, failingReader{})
	if _, err := g.NewID(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("NewID with failing randomness: err = %v", err)
	}
}

func TestIDsUniqueAcrossGeneratorsAndGoroutines(t *testing.T) {
	// Two generators (two replicas) on one clock reading, four goroutines:
	// uniqueness across generators comes from the 80 random bits.
	at := time.UnixMilli(1_700_000_000_000)
	gens := []*auditemit.IDGenerator{
		auditemit.NewIDGenerator(fixedClock(at), nil),
		auditemit.NewIDGenerator(fixedClock(at), nil),
	}
	const perWorker = 5000
	results := make([][]string, 4)
	var wg sync.WaitGroup
	for w := range results {
		wg.Go(func() {
			for range perWorker {
				id, err := gens[w%2].NewID()
				if err != nil {
					t.Error(err)
					return
				}
				results[w] = append(results[w], id)
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for w, ids := range results {
		if !slices.IsSorted(ids) {
			t.Errorf("worker %d: ids from one generator are not increasing", w)
		}
		for _, id := range ids {
			if seen[id] {
				t.Fatalf("duplicate id %q", id)
			}
			seen[id] = true
		}
	}
}

func TestIDTimeRejects(t *testing.T) {
	for _, id := range []string{
		"",
		"01ARZ3NDEKTSV4RRFFQ69G5FA",   // 25 characters
		"01ARZ3NDEKTSV4RRFFQ69G5FAVX", // 27 characters
		"01arz3ndektsv4rrffq69g5fav",  // lower case
		"01ARZ3NDEKTSV4RRFFQ69G5FAI",  // I is not in the alphabet
		"01ARZ3NDEKTSV4RRFFQ69G5FAL",
		"01ARZ3NDEKTSV4RRFFQ69G5FAO",
		"01ARZ3NDEKTSV4RRFFQ69G5FAU",
		"81ARZ3NDEKTSV4RRFFQ69G5FAV", // more than 128 bits
		"01ARZ3NDEK/SV4RRFFQ69G5FAV",
	} {
		if _, err := auditemit.IDTime(id); !errors.Is(err, auditemit.ErrInvalidID) {
			t.Errorf("IDTime(%q) err = %v, want ErrInvalidID", id, err)
		}
	}
	if _, err := auditemit.IDTime("7ZZZZZZZZZZZZZZZZZZZZZZZZZ"); err != nil {
		t.Errorf("the largest ULID: %v", err)
	}
}
