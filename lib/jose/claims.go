package jose

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// RegisteredClaims are the RFC 7519 §4.1 claims. Callers embed it in their own
// claims structs; Verifier checks exp, nbf, iat, iss and aud itself.
type RegisteredClaims struct {
	Issuer    string       `json:"iss,omitempty"`
	Subject   string       `json:"sub,omitempty"`
	Audience  Audience     `json:"aud,omitempty"`
	Expiry    *NumericDate `json:"exp,omitempty"`
	NotBefore *NumericDate `json:"nbf,omitempty"`
	IssuedAt  *NumericDate `json:"iat,omitempty"`
	ID        string       `json:"jti,omitempty"`
}

// Audience is the "aud" claim: one or more audience strings. It unmarshals
// from either a string or an array of strings (RFC 7519 §4.1.3) and marshals
// a single audience as a plain string, the form RFC 9068 examples use.
type Audience []string

// Contains reports whether aud is one of the audiences, compared exactly.
func (a Audience) Contains(aud string) bool {
	for _, v := range a {
		if v == aud {
			return true
		}
	}
	return false
}

// MarshalJSON implements json.Marshaler.
func (a Audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

// UnmarshalJSON implements json.Unmarshaler.
func (a *Audience) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = Audience{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("aud must be a string or an array of strings: %w", err)
	}
	*a = Audience(l)
	return nil
}

// NumericDate is a JWT time: seconds since the Unix epoch (RFC 7519 §2).
type NumericDate int64

// maxNumericDate is the end of year 9999; larger values are refused rather
// than overflowing time arithmetic.
const maxNumericDate = 253402300799

// NewNumericDate returns t as a NumericDate, truncated to whole seconds.
func NewNumericDate(t time.Time) *NumericDate {
	d := NumericDate(t.Unix())
	return &d
}

// Time returns d as a time.Time.
func (d NumericDate) Time() time.Time { return time.Unix(int64(d), 0) }

// UnmarshalJSON accepts an integer or a fractional number of seconds. A
// fraction is dropped: for "exp" that ends validity up to a second early, and
// for "nbf"/"iat" any effect is far inside the clock skew.
func (d *NumericDate) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(bytes.TrimSpace(b)), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return fmt.Errorf("invalid NumericDate %.40q", b)
	}
	*d = NumericDate(math.Floor(f))
	return nil
}
