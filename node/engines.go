package node

import (
	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node/hiveops"
	"github.com/rbee-project/rbee/node/jobs"
	workercat "github.com/rbee-project/rbee/worker/catalog"
)

// External engines are polled and called by node/supervisor; the node
// checks their registration here.

// validateBinaryAdd checks a worker_binary_add request before a job
// exists. When the engine is registered on this node the file is checked
// here too (an existing regular executable, else 400); for another hive
// that node checks it when the job runs there.
func (n *Node) validateBinaryAdd(req Request) error {
	if err := validateOnHive[api.BinaryAddRequest](nil)(req); err != nil {
		return err
	}
	r, _ := decode[api.BinaryAddRequest](req)
	if r.Path == "" {
		return jobs.Errorf(jobs.CodeBadRequest, "worker_binary_add needs field \"path\" (the engine's executable on the hive)")
	}
	opts := hiveops.RegisterOptions(r)
	if req.Hive == "" || req.Hive == n.cfg.Name || req.Hive == n.ID() {
		if _, err := n.binaries.CheckRegister(opts); err != nil {
			return jobs.Errorf(jobs.CodeBadRequest, "worker_binary_add: %v", err)
		}
		return nil
	}
	if opts.Template != "" {
		if _, err := workercat.ParseTemplate(opts.Template); err != nil {
			return jobs.Errorf(jobs.CodeBadRequest, "worker_binary_add: %v", err)
		}
	}
	return nil
}
