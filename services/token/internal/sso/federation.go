package sso

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/fetch"
	"github.com/mcpid/mcpid/services/token/internal/events"
	"github.com/mcpid/mcpid/services/token/internal/kek"
)

// Config wires federation into the token service.
type Config struct {
	// Issuer is the token service's issuer (callback URLs).
	Issuer  string
	Etcd    *clientv3.Client
	Service string
	KEK     *kek.Ring
	Events  *events.Emitter
	// Fetch is the fetcher policy for discovery and keys; its AllowHTTP
	// and AllowPrivate also apply to the upstream token endpoint.
	Fetch fetch.Config
	// StateTTL bounds an upstream round trip.
	StateTTL time.Duration
	// PasswordLogin offers the built-in directory's form.
	PasswordLogin bool
	// Seed are connectors created at start-up when absent. Their
	// client_secret_file paths are the only ones read outside SecretsDir.
	Seed []*tokenv1.Connector
	// SecretsDir is the directory whose files the admin API may name as
	// client_secret_file ("" = none).
	SecretsDir string
	Now        func() time.Time
	Logger     *slog.Logger
}

// Federation is the token service's SSO: the connector registry (for the
// login flow) and the operator API.
type Federation struct {
	Registry *Registry
	Admin    *Admin
	fetcher  *fetch.Fetcher
	seed     []*tokenv1.Connector
	log      *slog.Logger
}

// New builds the federation; Run follows etcd.
func New(cfg Config) (*Federation, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f, err := fetch.New(cfg.Fetch)
	if err != nil {
		return nil, fmt.Errorf("sso: fetcher: %w", err)
	}
	st, err := NewStore(cfg.Etcd, cfg.Service)
	if err != nil {
		return nil, err
	}
	timeout := cfg.Fetch.Timeout
	if timeout == 0 {
		timeout = fetch.DefaultTimeout
	}
	env := &Env{
		Issuer: cfg.Issuer, Fetcher: f, TokenClient: NewTokenClient(cfg.Fetch.AllowPrivate, timeout),
		AllowHTTP: cfg.Fetch.AllowHTTP, Store: st, KEK: cfg.KEK,
		SecretFiles: &SecretFiles{Dir: cfg.SecretsDir, Seeded: seededFrom(cfg.Seed)}, StateTTL: cfg.StateTTL, Now: cfg.Now, Logger: cfg.Logger,
	}
	reg, err := NewRegistry(cfg.Etcd, env, cfg.PasswordLogin, cfg.Logger)
	if err != nil {
		return nil, err
	}
	return &Federation{Registry: reg, Admin: NewAdmin(env, reg, cfg.Events), fetcher: f, seed: cfg.Seed, log: cfg.Logger}, nil
}

// seedMaxBackoff bounds the wait between seeding attempts.
const seedMaxBackoff = 5 * time.Second

// Run follows the connectors in etcd and seeds the configured ones once the
// store answers, until ctx ends.
func (f *Federation) Run(ctx context.Context) error {
	defer f.fetcher.Close()
	if len(f.seed) == 0 {
		if err := f.Registry.Run(ctx); !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	}
	errc := make(chan error, 1)
	go func() { errc <- f.Registry.Run(ctx) }()
	backoff := 100 * time.Millisecond
	for {
		created, err := f.Admin.Seed(ctx, f.seed)
		if len(created) > 0 {
			f.log.Info("created connectors from the connectors file", "connectors", created)
		}
		if err == nil || ctx.Err() != nil {
			break
		}
		f.log.Warn("seeding connectors failed, retrying", "error", err.Error())
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, seedMaxBackoff)
	}
	err := <-errc
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Ready reports whether the connectors are loaded.
func (f *Federation) Ready(ctx context.Context) error { return f.Registry.Ready(ctx) }
