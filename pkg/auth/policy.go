package auth

import "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"

// Policy maps each procedure ("/fsb.v1.FastPathService/CreateSandbox") to
// the roles that may call it. A procedure it does not name is denied to
// everyone: a new RPC needs its line here (a test checks every one has).
type Policy map[string][]Role

// FilesRoute names the controller's plain HTTP file route (GET and PUT
// /files/{namespace}/{name}?path=) in FastPathPolicy; Route guards it.
const FilesRoute = "/files"

// FastPathPolicy is the controller's, for the fast path, its file route
// and the janitor's service on the same port: users call the user API, the
// janitor only its question.
var FastPathPolicy = Policy{
	fsbv1connect.FastPathServiceCreateSandboxProcedure:   {RoleUser},
	fsbv1connect.FastPathServiceDeleteSandboxProcedure:   {RoleUser},
	fsbv1connect.FastPathServiceUpdateSandboxProcedure:   {RoleUser},
	fsbv1connect.FastPathServiceListSandboxesProcedure:   {RoleUser},
	fsbv1connect.FastPathServiceGetSandboxProcedure:      {RoleUser},
	fsbv1connect.FastPathServiceStreamLogsProcedure:      {RoleUser},
	fsbv1connect.FastPathServiceListAgentsProcedure:      {RoleUser},
	fsbv1connect.FastPathServiceExecProcedure:            {RoleUser},
	fsbv1connect.FastPathServiceExecInteractiveProcedure: {RoleUser},
	fsbv1connect.FastPathServiceAttachProcessProcedure:   {RoleUser},
	fsbv1connect.FastPathServiceSendInputProcedure:       {RoleUser},
	fsbv1connect.FastPathServiceCloseInputProcedure:      {RoleUser},
	fsbv1connect.FastPathServiceSignalProcessProcedure:   {RoleUser},
	fsbv1connect.FastPathServiceResizePtyProcedure:       {RoleUser},
	fsbv1connect.FastPathServiceListProcessesProcedure:   {RoleUser},
	fsbv1connect.FastPathServiceReadFileProcedure:        {RoleUser},
	fsbv1connect.FastPathServiceWriteFileProcedure:       {RoleUser},
	fsbv1connect.FastPathServiceListDirProcedure:         {RoleUser},
	fsbv1connect.FastPathServiceStatProcedure:            {RoleUser},
	fsbv1connect.FastPathServiceMakeDirProcedure:         {RoleUser},
	fsbv1connect.FastPathServiceMoveProcedure:            {RoleUser},
	fsbv1connect.FastPathServiceRemoveProcedure:          {RoleUser},
	FilesRoute: {RoleUser},
	fsbv1connect.JanitorServiceClassifyProcedure: {RoleJanitor},
}

// AgentPolicy is the agent's: only holders of its token (the controller).
var AgentPolicy = Policy{
	fsbv1connect.AgentServiceCreateSandboxProcedure: {RoleAgent},
	fsbv1connect.AgentServiceDeleteSandboxProcedure: {RoleAgent},
	fsbv1connect.AgentServiceGetStatusProcedure:     {RoleAgent},
	fsbv1connect.AgentServiceWatchStatusProcedure:   {RoleAgent},
	fsbv1connect.AgentServiceStreamLogsProcedure:    {RoleAgent},
	fsbv1connect.AgentServiceMarkPersistedProcedure: {RoleAgent},
	fsbv1connect.AgentServiceExecProcedure:          {RoleAgent},
	fsbv1connect.AgentServiceAttachProcessProcedure: {RoleAgent},
	fsbv1connect.AgentServiceSendInputProcedure:     {RoleAgent},
	fsbv1connect.AgentServiceCloseInputProcedure:    {RoleAgent},
	fsbv1connect.AgentServiceSignalProcessProcedure: {RoleAgent},
	fsbv1connect.AgentServiceResizePtyProcedure:     {RoleAgent},
	fsbv1connect.AgentServiceListProcessesProcedure: {RoleAgent},
	fsbv1connect.AgentServiceReadFileProcedure:      {RoleAgent},
	fsbv1connect.AgentServiceWriteFileProcedure:     {RoleAgent},
	fsbv1connect.AgentServiceListDirProcedure:       {RoleAgent},
	fsbv1connect.AgentServiceStatProcedure:          {RoleAgent},
	fsbv1connect.AgentServiceMakeDirProcedure:       {RoleAgent},
	fsbv1connect.AgentServiceMoveProcedure:          {RoleAgent},
	fsbv1connect.AgentServiceRemoveProcedure:        {RoleAgent},
}
