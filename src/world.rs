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

    /// `ijepa bench allreduce`: the time of one MPI all-reduce (sum) of f32 buffers the
    /// size of the trainable parameters of I-JEPA ViT-S/16, ViT-B/16 and ViT-H/14 at
    /// 224 (predictor 384 wide, 12 deep, as the official configurations), between the
    /// processes of this job; rank 0 prints it as the buffer's GB/s and the bus GB/s
    /// of a ring (2 (n - 1) / n of the buffer through each process's link).
    #[cfg(feature = "mpi")]
    pub fn bench_allreduce(&self, repeats: usize) -> Result<()> {
        use mpi::collective::SystemOperation;
        use mpi::traits::{Communicator, CommunicatorCollectives};
        let Some(universe) = &self.universe else {
            anyhow::bail!("bench allreduce measures the processes of an MPI job: start it with mpirun -np N (N of 2 or more)");
        };
        let world = universe.world();
        let (rank, n) = (world.rank(), world.size() as usize);
        for (name, preset, patch) in [
            ("ViT-S/16", "vit_small", 16),
            ("ViT-B/16", "vit_base", 16),
            ("ViT-H/14", "vit_huge", 14),
        ] {
            let config = model::IjepaConfig {
                encoder: model::config::vit_preset(preset, 224, patch, 3)?,
                predictor: model::PredictorConfig {
                    embed_dim: 384,
                    depth: 12,
                    num_heads: 12,
                },
            };
            let count = config.trainable_parameters();
            let send = vec![1.0f32; count];
            let mut recv = vec![0.0f32; count];
            world.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum());
            world.barrier();
            let start = std::time::Instant::now();
            for _ in 0..repeats {
                world.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum());
            }
            let seconds = start.elapsed().as_secs_f64() / repeats as f64;
            anyhow::ensure!(
                recv.iter().all(|&v| v == n as f32),
                "the all-reduce of {name} did not sum {n} ones"
            );
            if rank == 0 {
                let bytes = (count * 4) as f64;
                println!(
                    "[{n} processes] all-reduce {name} I-JEPA gradients ({:.1} M values, {:.0} MB): {:.1} ms, {:.2} GB/s of buffer, {:.2} GB/s bus",
                    count as f64 / 1e6,
                    bytes / 1e6,
                    seconds * 1e3,
                    bytes / seconds / 1e9,
                    2.0 * (n - 1) as f64 / n as f64 * bytes / seconds / 1e9
                );
            }
        }
        Ok(())
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
                eprint_line(&format!(
                    "error on rank {} of {}: {e:?}",
                    world.rank(),
                    world.size()
                ));
                world.abort(1);
            }
        }
        result
    }
}

/// Print one line to stderr in a single write. `eprintln!` writes its pieces one by
/// one, and the launcher forwards each piece as it comes, so the lines of several
/// ranks would interleave mid-line.
pub fn eprint_line(line: &str) {
    use std::io::Write;
    // Nothing sensible is left to do when stderr itself fails.
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
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
