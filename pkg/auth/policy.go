package auth

import "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"

// Policy maps each procedure ("/fsb.v1.FastPathService/CreateSandbox") to
// the roles that may call it. A procedure it does not name is denied to
// everyone: a new RPC needs its line here (a test checks every one has).
type Policy map[string][]Role

// FastPathPolicy is the controller's, for the fast path and the janitor's
// service on the same port: users call the user API, the janitor only its
// question.
var FastPathPolicy = Policy{
	fsbv1connect.FastPathServiceCreateSandboxProcedure: {RoleUser},
	fsbv1connect.FastPathServiceDeleteSandboxProcedure: {RoleUser},
	fsbv1connect.FastPathServiceUpdateSandboxProcedure: {RoleUser},
	fsbv1connect.FastPathServiceListSandboxesProcedure: {RoleUser},
	fsbv1connect.FastPathServiceGetSandboxProcedure:    {RoleUser},
	fsbv1connect.FastPathServiceStreamLogsProcedure:    {RoleUser},
	fsbv1connect.FastPathServiceListAgentsProcedure:    {RoleUser},
	fsbv1connect.JanitorServiceClassifyProcedure:       {RoleJanitor},
}

// AgentPolicy is the agent's: only holders of its token (the controller).
var AgentPolicy = Policy{
	fsbv1connect.AgentServiceCreateSandboxProcedure: {RoleAgent},
	fsbv1connect.AgentServiceDeleteSandboxProcedure: {RoleAgent},
	fsbv1connect.AgentServiceGetStatusProcedure:     {RoleAgent},
	fsbv1connect.AgentServiceWatchStatusProcedure:   {RoleAgent},
	fsbv1connect.AgentServiceStreamLogsProcedure:    {RoleAgent},
	fsbv1connect.AgentServiceMarkPersistedProcedure: {RoleAgent},
}
