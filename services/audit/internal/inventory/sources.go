package inventory

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
)

// maxGrantPages bounds how many pages of one client's grants are read.
const maxGrantPages = 10

// RegistrationClient asks the registration service over gRPC (the audit
// service's mTLS identity is allowed GetClient).
type RegistrationClient struct {
	C registrationv1.RegistrationServiceClient
}

// GetClient implements Registration.
func (r RegistrationClient) GetClient(ctx context.Context, clientID string) (*registrationv1.Client, error) {
	resp, err := r.C.GetClient(ctx, &registrationv1.GetClientRequest{ClientId: clientID})
	if status.Code(err) == codes.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return resp.GetClient(), nil
}

// GrantsClient asks the token service over gRPC (the audit service's mTLS
// identity is allowed ListGrants).
type GrantsClient struct {
	C tokenv1.TokenServiceClient
}

// ListGrants implements Grants.
func (g GrantsClient) ListGrants(ctx context.Context, clientID string) ([]*tokenv1.Grant, error) {
	var out []*tokenv1.Grant
	token := ""
	for range maxGrantPages {
		resp, err := g.C.ListGrants(ctx, &tokenv1.ListGrantsRequest{ClientId: clientID, PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, err
		}
		out = append(out, resp.GetGrants()...)
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	return out, nil
}
