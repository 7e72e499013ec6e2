package revoke

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
)

// TokenClient is the part of tokenv1.TokenServiceClient the revoker uses.
type TokenClient interface {
	RevokeGrants(ctx context.Context, in *tokenv1.RevokeGrantsRequest, opts ...grpc.CallOption) (*tokenv1.RevokeGrantsResponse, error)
	RevokeConsents(ctx context.Context, in *tokenv1.RevokeConsentsRequest, opts ...grpc.CallOption) (*tokenv1.RevokeConsentsResponse, error)
}

// TokenRevoker is the Revoker of the token service over gRPC (mTLS as the
// registration service, which the token service allows the client_id
// selector of RevokeGrants and RevokeConsents).
type TokenRevoker struct {
	Client TokenClient
}

// RevokeClient implements Revoker: every grant of the client with a CLIENT
// watermark (so every access token already issued to it stops at once),
// then its remembered consents (a client that comes back must ask again).
// Both calls are idempotent, so a redelivery is harmless.
func (r TokenRevoker) RevokeClient(ctx context.Context, clientID, reason string) error {
	reason = "client_" + reason
	if _, err := r.Client.RevokeGrants(ctx, &tokenv1.RevokeGrantsRequest{
		Selector: &tokenv1.RevokeGrantsRequest_ClientId{ClientId: clientID}, Reason: reason,
	}); err != nil {
		return fmt.Errorf("revoke grants of %s: %w", clientID, err)
	}
	if _, err := r.Client.RevokeConsents(ctx, &tokenv1.RevokeConsentsRequest{
		Selector: &tokenv1.RevokeConsentsRequest_ClientId{ClientId: clientID}, KeepGrants: true, Reason: reason,
	}); err != nil {
		return fmt.Errorf("revoke consents of %s: %w", clientID, err)
	}
	return nil
}
