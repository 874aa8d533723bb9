//! The processes of a run. Built with the `mpi` feature and started by `mpirun` (or
//! another MPI launcher), each process is one rank of `MPI_COMM_WORLD` and pretraining
//! is data-parallel over them; otherwise there is one process.

use anyhow::Result;
use train::parallel::{Collective, Single};

/// This process's place in the run, held for the life of `main`: under MPI it owns the
/// MPI environment, finalised when it drops.
pub struct Launch {
    #[cfg(feature = "mpi")]
    universe: Option<mpi::environment::Universe>,
}

impl Launch {
    /// Join the MPI job this process was started in, if any, and tell the engine the
    /// rank on this machine, which picks the GPU. Call it first in `main`, while the
    /// process has one thread.
    pub fn init() -> Launch {
        #[cfg(feature = "mpi")]
        {
            use mpi::traits::Communicator;
            // Open MPI, MPICH and Slurm's PMI set these in the processes they start.
            let launched = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
                .iter()
                .any(|v| std::env::var_os(v).is_some());
            let universe = if launched { mpi::initialize() } else { None };
            if let Some(u) = &universe {
                let local = u.world().split_shared(0).rank();
                std::env::set_var(engine::device::LOCAL_RANK_ENV, local.to_string());
            }
            Launch { universe }
        }
        #[cfg(not(feature = "mpi"))]
        Launch {}
    }

    /// The processes pretraining runs on.
    pub fn world(&self) -> Box<dyn Collective> {
        #[cfg(feature = "mpi")]
        if let Some(u) = &self.universe {
            return Box::new(mpi_world::MpiWorld { comm: u.world() });
        }
        Box::new(Single)
    }

    /// End a command: in a run of several processes, an error is reported with the
    /// rank that met it and ends the whole job at once (`MPI_Abort`), so no rank waits
    /// forever for one that has stopped.
    pub fn finish(self, result: Result<()>) -> Result<()> {
        #[cfg(feature = "mpi")]
        if let (Err(e), Some(u)) = (&result, &self.universe) {
            use mpi::traits::Communicator;
            let world = u.world();
            if world.size() > 1 {
                eprintln!("error on rank {} of {}: {e:?}", world.rank(), world.size());
                world.abort(1);
            }
        }
        result
    }
}

#[cfg(feature = "mpi")]
mod mpi_world {
    use mpi::collective::SystemOperation;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::{Communicator, CommunicatorCollectives};
    use train::parallel::Collective;

    /// `MPI_COMM_WORLD` as the trainer's collective.
    pub struct MpiWorld {
        pub comm: SimpleCommunicator,
    }

    impl Collective for MpiWorld {
        fn rank(&self) -> usize {
            self.comm.rank() as usize
        }

        fn size(&self) -> usize {
            self.comm.size() as usize
        }

        fn all_reduce_sum(&self, values: &mut [f32]) {
            let send = values.to_vec();
            self.comm
                .all_reduce_into(&send[..], values, SystemOperation::sum());
        }

        fn all_gather(&self, value: u64) -> Vec<u64> {
            let mut all = vec![0u64; self.size()];
            self.comm.all_gather_into(&value, &mut all[..]);
            all
        }
    }
}
