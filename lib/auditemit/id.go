package auditemit

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// IDLen is the length of an event id: a ULID in Crockford base32.
const IDLen = 26

// crockford is the ULID alphabet (Crockford's base32 without I, L, O, U).
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// maxIDTime is the first millisecond a 48-bit ULID time cannot hold (year
// 10889).
const maxIDTime = 1 << 48

// ErrInvalidID means a string is not an event id (26 upper-case Crockford
// base32 characters encoding at most 128 bits).
var ErrInvalidID = errors.New("auditemit: invalid event id")

// IDGenerator generates event ids as Event.id specifies: ULIDs, 48 bits of
// Unix time in milliseconds followed by 80 random bits, written as 26
// upper-case Crockford base32 characters, so that ids sort (as strings) by
// creation time and are unique across processes without coordination.
//
// Ids from one generator strictly increase, which keeps an outbox in creation
// order: within one millisecond, and when the clock steps back, a generator
// continues from its last id plus one instead of drawing new randomness
// (the monotonic ULID scheme). It is safe for concurrent use.
type IDGenerator struct {
	now  func() time.Time
	rand io.Reader

	mu       sync.Mutex
	haveLast bool
	lastMS   uint64
	last     [10]byte // the random part of the last id
}

// NewIDGenerator returns a generator reading the clock from now and
// randomness from rand; nil means time.Now and crypto/rand.
func NewIDGenerator(now func() time.Time, rand io.Reader) *IDGenerator {
	if now == nil {
		now = time.Now
	}
	return &IDGenerator{now: now, rand: rand}
}

// NewID returns a new id. It fails only when the randomness source fails or
// the clock is beyond the year 10889.
func (g *IDGenerator) NewID() (string, error) {
	t := g.now().UnixMilli()
	ms := uint64(max(t, 0))

	g.mu.Lock()
	defer g.mu.Unlock()
	if g.haveLast && ms <= g.lastMS {
		ms = g.lastMS
		if !increment(&g.last) {
			// 2^80 ids in one millisecond cannot happen by chance; it means
			// the randomness is not random. Borrow the next millisecond
			// rather than repeat an id.
			ms++
		}
	} else if err := g.read(g.last[:]); err != nil {
		return "", err
	}
	if ms >= maxIDTime {
		return "", fmt.Errorf("auditemit: clock %d ms is beyond the ULID range", ms)
	}
	g.haveLast, g.lastMS = true, ms
	return encodeID(ms, &g.last), nil
}

func (g *IDGenerator) read(b []byte) error {
	if g.rand == nil {
		_, _ = rand.Read(b) // never fails (crypto/rand crashes the program instead)
		return nil
	}
	if _, err := io.ReadFull(g.rand, b); err != nil {
		return fmt.Errorf("auditemit: read randomness: %w", err)
	}
	return nil
}

// increment adds one to the big-endian number b; false when it wrapped to 0.
func increment(b *[10]byte) bool {
	for i := len(b) - 1; i >= 0; i-- {
		b[i]++
		if b[i] != 0 {
			return true
		}
	}
	return false
}

// encodeID writes the 128-bit value ms<<80 | rnd as 26 base32 digits, the
// first holding the top 3 bits (so it is at most '7').
func encodeID(ms uint64, rnd *[10]byte) string {
	hi := ms<<16 | uint64(rnd[0])<<8 | uint64(rnd[1])
	var lo uint64
	for _, c := range rnd[2:] {
		lo = lo<<8 | uint64(c)
	}
	var out [IDLen]byte
	for i := IDLen - 1; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

// decodeDigit returns the value of one canonical (upper-case) base32 digit.
func decodeDigit(c byte) (uint64, bool) {
	switch {
	case c >= '0' && c <= '9':
		return uint64(c - '0'), true
	case c >= 'A' && c <= 'Z':
		// The index in the alphabet; I, L, O and U are not in it.
		for i := 10; i < len(crockford); i++ {
			if crockford[i] == c {
				return uint64(i), true
			}
		}
	}
	return 0, false
}

// IDTime checks that id is an event id and returns the time it encodes (to
// the millisecond, UTC). The audit service uses it to tell an id that never
// existed from one that left the retention window.
func IDTime(id string) (time.Time, error) {
	if len(id) != IDLen || id[0] > '7' {
		return time.Time{}, fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	var ms uint64
	for i := range IDLen {
		d, ok := decodeDigit(id[i])
		if !ok {
			return time.Time{}, fmt.Errorf("%w: %q", ErrInvalidID, id)
		}
		if i < 10 { // the first 10 digits hold 50 bits: 2 zero bits and the time
			ms = ms<<5 | d
		}
	}
	return time.UnixMilli(int64(ms)).UTC(), nil
}
