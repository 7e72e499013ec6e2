// Package directory is the built-in user directory: users in etcd, argon2id
// password hashes (bounded concurrency), the password policy, login
// throttling per source and per account, and a temporary lockout after
// repeated failures. Federated users (identity connectors, see package
// connector) live in the same records.
package directory

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/services/token/internal/events"
	"github.com/mcpid/mcpid/services/token/internal/ratelimit"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// Login failures, answered to the browser as one generic message (except
// the throttles, which say "try later").
var (
	ErrInvalidCredentials = errors.New("directory: invalid username or password")
	ErrLocked             = errors.New("directory: account temporarily locked")
	ErrRateLimited        = errors.New("directory: too many login attempts")
)

// Password policy bounds (code points).
const (
	MinPasswordLen = 12
	MaxPasswordLen = 128
)

var usernameRe = regexp.MustCompile(`^[a-z0-9._@-]{1,64}$`)

// Config configures login throttling and lockout.
type Config struct {
	// LockoutThreshold consecutive failures lock an account for
	// LockoutDuration.
	LockoutThreshold int
	LockoutDuration  time.Duration
	// SourceRatePerMinute/SourceBurst limit attempts per source address;
	// AccountRatePerMinute/AccountBurst per typed username.
	SourceRatePerMinute  float64
	SourceBurst          int
	AccountRatePerMinute float64
	AccountBurst         int
}

// Directory manages users.
type Directory struct {
	cfg      Config
	store    store.Store
	hasher   *Hasher
	events   *events.Emitter
	bySource *ratelimit.Limiter
	byName   *ratelimit.Limiter
	now      func() time.Time
}

// New returns a directory.
func New(cfg Config, st store.Store, hasher *Hasher, ev *events.Emitter, now func() time.Time) *Directory {
	if now == nil {
		now = time.Now
	}
	return &Directory{
		cfg: cfg, store: st, hasher: hasher, events: ev, now: now,
		bySource: ratelimit.New(cfg.SourceRatePerMinute, cfg.SourceBurst, now),
		byName:   ratelimit.New(cfg.AccountRatePerMinute, cfg.AccountBurst, now),
	}
}

// NewUserID returns "usr_" + 26 lowercase base32 characters (130 random
// bits, of which 128 are used).
func NewUserID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "usr_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)), nil
}

func invalidField(field, format string, args ...any) error {
	return apierr.New(codes.InvalidArgument, tokenv1.ErrorReason_ERROR_REASON_INVALID_FIELD.String(), format, args...).
		WithMetadata("field", field)
}

func policyViolation(msg string) error {
	return apierr.New(codes.InvalidArgument, tokenv1.ErrorReason_ERROR_REASON_PASSWORD_POLICY_VIOLATION.String(), "%s", msg)
}

// CheckPassword applies the password policy.
func CheckPassword(password, username, email string) error {
	n := utf8.RuneCountInString(password)
	if !utf8.ValidString(password) || n < MinPasswordLen || n > MaxPasswordLen {
		return policyViolation(fmt.Sprintf("the password must have %d to %d characters", MinPasswordLen, MaxPasswordLen))
	}
	if strings.EqualFold(password, username) || (email != "" && strings.EqualFold(password, email)) {
		return policyViolation("the password must differ from the username and email")
	}
	return nil
}

// NewUser is the input of CreateUser.
type NewUser struct {
	Username    string
	Email       string
	DisplayName string
	Roles       []string
	Password    string
}

// ValidateRoles checks role names.
func ValidateRoles(roles []string) error {
	for _, r := range roles {
		if r != "admin" && r != "auditor" {
			return invalidField("user.roles", "unknown or unspecified role %q", r)
		}
	}
	return nil
}

// CreateUser creates a built-in directory user. actor is who asks.
func (d *Directory) CreateUser(ctx context.Context, actor *auditv1.Actor, in NewUser) (*store.User, error) {
	if !usernameRe.MatchString(in.Username) {
		return nil, invalidField("user.username", "username must be 1 to 64 characters of lowercase letters, digits, '.', '_', '-', '@'")
	}
	if err := checkProfile(in.Email, in.DisplayName); err != nil {
		return nil, err
	}
	if err := ValidateRoles(in.Roles); err != nil {
		return nil, err
	}
	now := d.now().UTC()
	u := &store.User{Username: in.Username, Email: in.Email, DisplayName: in.DisplayName, Roles: dedupe(in.Roles), Created: now, Updated: now}
	if in.Password != "" {
		if err := CheckPassword(in.Password, in.Username, in.Email); err != nil {
			return nil, err
		}
		h, err := d.hasher.Hash(ctx, in.Password)
		if err != nil {
			return nil, err
		}
		u.PasswordHash = h
	}
	id, err := NewUserID()
	if err != nil {
		return nil, err
	}
	u.ID = id
	op, err := d.events.Op(ctx, events.UserCreated(actor, u.ID, u.Email))
	if err != nil {
		return nil, err
	}
	if err := d.store.CreateUser(ctx, u, op); err != nil {
		if errors.Is(err, store.ErrUsernameTaken) {
			return nil, apierr.New(codes.AlreadyExists, tokenv1.ErrorReason_ERROR_REASON_USERNAME_TAKEN.String(), "username %q is taken", in.Username)
		}
		return nil, err
	}
	return u, nil
}

func checkProfile(email, displayName string) error {
	if len(email) > 254 || strings.ContainsFunc(email, unicode.IsControl) {
		return invalidField("user.email", "email must be at most 254 characters")
	}
	if utf8.RuneCountInString(displayName) > 128 || strings.ContainsFunc(displayName, unicode.IsControl) {
		return invalidField("user.display_name", "display_name must be at most 128 characters without control characters")
	}
	return nil
}

func dedupe(ss []string) []string {
	out := slices.Clone(ss)
	slices.Sort(out)
	return slices.Compact(out)
}

// Login is a sign-in attempt with the built-in directory.
type Login struct {
	Username string
	Password string
	Source   string
	Request  events.Request
}

// Verify checks a username and password with throttling and lockout. On
// success it returns the user (the caller commits the sign-in, resetting the
// failure counter, with ResetFailures). On failure it records what the
// failure changes (failure counter, lockout, audit event) and returns
// ErrInvalidCredentials, ErrLocked or ErrRateLimited; a disabled user gets
// ErrInvalidCredentials too (no account probing).
//
// The rate limits count failed attempts only, per source address and per
// typed username: a brute force or credential stuffing run is mostly
// failures, and a user who signs in often is never throttled.
func (d *Directory) Verify(ctx context.Context, in Login) (*store.User, error) {
	name := strings.ToLower(strings.TrimSpace(in.Username))
	srcKey, nameKey := "src:"+in.Source, "name:"+name
	if !d.bySource.Allowed(srcKey) || !d.byName.Allowed(nameKey) {
		return nil, d.fail(ctx, nil, name, "rate_limited", ErrRateLimited, in.Request)
	}
	failed := func() { d.bySource.Take(srcKey); d.byName.Take(nameKey) }
	u, err := d.store.GetUserByUsername(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		// Spend the same time as for a real user.
		_, _ = d.hasher.Verify(ctx, "", in.Password)
		failed()
		return nil, d.fail(ctx, nil, name, "invalid_credentials", ErrInvalidCredentials, in.Request)
	}
	if err != nil {
		return nil, err
	}
	now := d.now()
	if now.Before(u.LockedUntil) {
		failed()
		return nil, d.fail(ctx, u, name, "account_locked", ErrLocked, in.Request)
	}
	ok, err := d.hasher.Verify(ctx, u.PasswordHash, in.Password)
	if err != nil {
		return nil, err
	}
	if !ok || u.Disabled {
		failed()
		return nil, d.countFailure(ctx, u.ID, in.Request)
	}
	return u, nil
}

// fail records a failed attempt that changes no user record.
func (d *Directory) fail(ctx context.Context, u *store.User, name, reason string, err error, r events.Request) error {
	id := ""
	if u != nil {
		id = u.ID
	}
	op, opErr := d.events.Op(ctx, events.LoginFailed(id, name, reason, r))
	if opErr != nil {
		return opErr
	}
	if werr := d.store.AppendEvents(ctx, op); werr != nil {
		return werr
	}
	return err
}

// countFailure increments the user's failure counter (locking the account
// at the threshold) with the failure's event.
func (d *Directory) countFailure(ctx context.Context, userID string, r events.Request) error {
	locked := false
	_, err := d.store.UpdateUser(ctx, userID, func(u *store.User) ([]store.Op, error) {
		now := d.now().UTC()
		if !u.LockedUntil.IsZero() && !now.Before(u.LockedUntil) {
			u.FailedLogins, u.LockedUntil = 0, time.Time{}
		}
		u.FailedLogins++
		reason := "invalid_credentials"
		locked = false
		if d.cfg.LockoutThreshold > 0 && u.FailedLogins >= d.cfg.LockoutThreshold {
			u.LockedUntil = now.Add(d.cfg.LockoutDuration)
			locked = true
			reason = "account_locked"
		}
		op, err := d.events.Op(ctx, events.LoginFailed(u.ID, "", reason, r))
		if err != nil {
			return nil, err
		}
		return []store.Op{op}, nil
	})
	if err != nil {
		return err
	}
	if locked {
		return ErrLocked
	}
	return ErrInvalidCredentials
}

// ResetFailures is the user update of a successful sign-in.
func (d *Directory) ResetFailures(u *store.User) error {
	now := d.now().UTC()
	if u.Disabled {
		return ErrInvalidCredentials
	}
	u.FailedLogins, u.LockedUntil, u.LastLogin = 0, time.Time{}, now
	return nil
}

// SetPassword sets a built-in user's password, clears the lockout.
func (d *Directory) SetPassword(ctx context.Context, actor *auditv1.Actor, userID, password string) (*store.User, error) {
	cur, err := d.store.GetUser(ctx, userID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, apierr.New(codes.NotFound, tokenv1.ErrorReason_ERROR_REASON_USER_NOT_FOUND.String(), "no user %q", userID)
	}
	if err != nil {
		return nil, err
	}
	if len(cur.Identities) > 0 && cur.Username == "" {
		return nil, apierr.New(codes.FailedPrecondition, tokenv1.ErrorReason_ERROR_REASON_USER_FEDERATED.String(),
			"the user signs in through an identity connector")
	}
	if err := CheckPassword(password, cur.Username, cur.Email); err != nil {
		return nil, err
	}
	h, err := d.hasher.Hash(ctx, password)
	if err != nil {
		return nil, err
	}
	return d.store.UpdateUser(ctx, userID, func(u *store.User) ([]store.Op, error) {
		if err := CheckPassword(password, u.Username, u.Email); err != nil {
			return nil, err
		}
		u.PasswordHash, u.FailedLogins, u.LockedUntil, u.Updated = h, 0, time.Time{}, d.now().UTC()
		op, err := d.events.Op(ctx, events.AdminAction(actor, "user.password_set", u.ID))
		if err != nil {
			return nil, err
		}
		return []store.Op{op}, nil
	})
}

// EnsureUser creates username with password and roles if no user has that
// username (development seeding). It reports whether it created one.
func (d *Directory) EnsureUser(ctx context.Context, username, password string, roles []string) (bool, error) {
	if _, err := d.store.GetUserByUsername(ctx, username); err == nil {
		return false, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	_, err := d.CreateUser(ctx, events.SystemActor("seed-user"), NewUser{Username: username, Password: password, Roles: roles, DisplayName: username})
	var ae *apierr.Error
	if errors.As(err, &ae) && ae.Reason == tokenv1.ErrorReason_ERROR_REASON_USERNAME_TAKEN.String() {
		return false, nil // another replica seeded it
	}
	if err != nil {
		return false, err
	}
	return true, nil
}
