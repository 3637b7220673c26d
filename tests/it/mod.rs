mod cli;
mod layout;
mod nifti;
mod participant;
mod util;
mod validator;
