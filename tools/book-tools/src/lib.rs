//! The book's own tooling, shared by the mdBook preprocessor that draws listing
//! captions, the test harness's build script, and the harness's rule checks.
//!
//! Nothing here is part of the story the book tells; it is what keeps the book
//! honest: [`fences`] knows every code block and what its fence promises,
//! [`listing`] turns `<Listing>` tags into captions and checks them against the
//! repository, [`output`] compares a listing's stored output with a fresh run,
//! [`timeline`] draws Part II's thread timelines from recorded runs,
//! [`repo`] is the one map of the repository every tool reads, and
//! [`process`] the one way they run a program, bounded in time, and
//! [`all_tests`] runs every test of the workspace, several binaries at once.

pub mod all_tests;
pub mod fences;
pub mod links;
pub mod listing;
pub mod output;
pub mod process;
pub mod repo;
pub mod timeline;
pub mod versions;
