//! tickgate-loadtest as a library: the measured run, its sans-IO parts (message scanning,
//! sequence accounting, the verdict) and the reports, for the binary and its tests.

pub mod combine;
pub mod conn;
pub mod deflate;
pub mod drops;
pub mod metrics;
pub mod procfs;
pub mod progress;
pub mod report;
pub mod result;
pub mod resume;
pub mod run;
pub mod scan;
pub mod silence;
pub mod superseded;
pub mod tls;
pub mod tracker;
pub mod verdict;
pub mod wsframe;
