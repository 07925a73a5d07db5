//! Messages a supervisor answers. Use them through [`super::SupervisorHandle`].

use std::marker::PhantomData;

use actix::{Actor, Addr, Message};

use super::spec::ChildSpec;
use super::tree::{ChildCount, TreeNode};
use super::SupervisorError;

/// Adds a child at run time and starts it (after the existing children).
#[derive(Debug)]
pub struct StartChild(pub ChildSpec);

impl Message for StartChild {
    type Result = Result<(), SupervisorError>;
}

/// Stops a child (within its shutdown policy) and forgets its spec.
#[derive(Debug)]
pub struct RemoveChild(pub String);

impl Message for RemoveChild {
    type Result = Result<(), SupervisorError>;
}

/// The current address of a running child, if it is an `A`.
#[derive(Debug)]
pub struct ChildAddr<A>(pub String, pub PhantomData<fn() -> A>);

impl<A: Actor> Message for ChildAddr<A> {
    type Result = Option<Addr<A>>;
}

/// A snapshot of this supervisor's subtree.
#[derive(Debug)]
pub struct GetTree;

impl Message for GetTree {
    type Result = TreeNode;
}

/// How many children there are, and how many run.
#[derive(Debug)]
pub struct CountChildren;

impl Message for CountChildren {
    type Result = ChildCount;
}

/// Internal: retry starting children whose restart failed.
#[derive(Debug)]
pub(crate) struct RetryRestart(pub Vec<u64>);

impl Message for RetryRestart {
    type Result = ();
}
