package grpcapi

import (
	"context"

	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/token/internal/oauth"
)

type (
	oauthSelector   = oauth.RevokeSelector
	consentSelector = oauth.ConsentSelector
)

func isService(ctx context.Context) bool {
	p, _ := principal.FromContext(ctx)
	return p.Kind == principal.KindService
}
