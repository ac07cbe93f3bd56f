package fastpath

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"connectrpc.com/connect"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// applyAttempts bounds ApplyPool's read-modify-write against writers that
// get in between (the pool controller adding its finalizer, its status).
const applyAttempts = 5

// errNoPools is the answer of a server configured without a pool store
// (Config.Pools).
var errNoPools = errors.New("this controller serves no SandboxPools")

// pools returns the pool store, or FailedPrecondition when pools are not
// served.
func (s *Server) pools() error {
	if s.cfg.Pools == nil {
		return connect.NewError(connect.CodeFailedPrecondition, errNoPools)
	}
	return nil
}

// poolProto is a pool as the API shows it, with the agents serving it now.
func (s *Server) poolProto(p *v1alpha1.SandboxPool) *fsbv1.SandboxPool {
	return v1alpha1.PoolToProto(p, len(s.cfg.Registry.PoolAgents(v1alpha1.PoolOf(p.Name))))
}

func poolStoreError(name, namespace string, err error) error {
	if apierrors.IsNotFound(err) {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("sandbox pool %s not found in namespace %s", name, namespace))
	}
	if apierrors.IsInvalid(err) {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	return storeError(err)
}

// ApplyPool implements FastPathService: create, or replace labels and spec.
func (s *Server) ApplyPool(ctx context.Context, req *connect.Request[fsbv1.ApplyPoolRequest]) (*connect.Response[fsbv1.ApplyPoolResponse], error) {
	if err := s.pools(); err != nil {
		return nil, err
	}
	ns := s.cfg.PoolNamespace
	if req.Msg.GetPool() == nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("pool: required"))
	}
	want, err := v1alpha1.PoolFromProto(req.Msg.GetPool(), ns)
	if err != nil {
		return nil, invalid(err)
	}
	if err := invalid(v1alpha1.ValidatePool(want)); err != nil {
		return nil, err
	}
	if err := invalid(v1alpha1.ValidateLabels(want.Labels)); err != nil {
		return nil, err
	}
	for range applyAttempts {
		cur, err := s.cfg.Pools.Get(ctx, ns, want.Name)
		if apierrors.IsNotFound(err) {
			created, err := s.cfg.Pools.Create(ctx, want)
			if apierrors.IsAlreadyExists(err) {
				continue // made meanwhile: replace it
			}
			if err != nil {
				return nil, poolStoreError(want.Name, ns, err)
			}
			return connect.NewResponse(&fsbv1.ApplyPoolResponse{Pool: s.poolProto(created), Created: true, Changed: true}), nil
		}
		if err != nil {
			return nil, poolStoreError(want.Name, ns, err)
		}
		if cur.DeletionTimestamp != nil {
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
				"sandbox pool %s is being deleted: apply it again once it is gone", want.Name))
		}
		if apiequality.Semantic.DeepEqual(cur.Spec, want.Spec) && maps.Equal(cur.Labels, want.Labels) {
			return connect.NewResponse(&fsbv1.ApplyPoolResponse{Pool: s.poolProto(cur)}), nil
		}
		next := cur.DeepCopy()
		next.Labels, next.Spec = want.Labels, want.Spec
		updated, err := s.cfg.Pools.Update(ctx, next) // conditional on cur's resourceVersion
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return nil, poolStoreError(want.Name, ns, err)
		}
		return connect.NewResponse(&fsbv1.ApplyPoolResponse{Pool: s.poolProto(updated), Changed: true}), nil
	}
	return nil, connect.NewError(connect.CodeAborted, fmt.Errorf(
		"sandbox pool %s changed under each of %d attempts to apply it; try again", want.Name, applyAttempts))
}

// GetPool implements FastPathService.
func (s *Server) GetPool(ctx context.Context, req *connect.Request[fsbv1.GetPoolRequest]) (*connect.Response[fsbv1.GetPoolResponse], error) {
	if err := s.pools(); err != nil {
		return nil, err
	}
	ns, name := s.cfg.PoolNamespace, req.Msg.GetName()
	if err := invalid(v1alpha1.ValidateObjectName(ns, name)); err != nil {
		return nil, err
	}
	p, err := s.cfg.Pools.Get(ctx, ns, name)
	if err != nil {
		return nil, poolStoreError(name, ns, err)
	}
	return connect.NewResponse(&fsbv1.GetPoolResponse{Pool: s.poolProto(p)}), nil
}

// ListPools implements FastPathService.
func (s *Server) ListPools(ctx context.Context, _ *connect.Request[fsbv1.ListPoolsRequest]) (*connect.Response[fsbv1.ListPoolsResponse], error) {
	if err := s.pools(); err != nil {
		return nil, err
	}
	list, err := s.cfg.Pools.List(ctx, s.cfg.PoolNamespace, nil)
	if err != nil {
		return nil, storeError(err)
	}
	slices.SortFunc(list.Items, func(a, b v1alpha1.SandboxPool) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	out := &fsbv1.ListPoolsResponse{}
	for i := range list.Items {
		out.Pools = append(out.Pools, s.poolProto(&list.Items[i]))
	}
	return connect.NewResponse(out), nil
}

// DeletePool implements FastPathService.
func (s *Server) DeletePool(ctx context.Context, req *connect.Request[fsbv1.DeletePoolRequest]) (*connect.Response[fsbv1.DeletePoolResponse], error) {
	if err := s.pools(); err != nil {
		return nil, err
	}
	ns, name := s.cfg.PoolNamespace, req.Msg.GetName()
	if err := invalid(v1alpha1.ValidateObjectName(ns, name)); err != nil {
		return nil, err
	}
	if err := s.cfg.Pools.Delete(ctx, ns, name); err != nil {
		return nil, poolStoreError(name, ns, err)
	}
	return connect.NewResponse(&fsbv1.DeletePoolResponse{}), nil
}
