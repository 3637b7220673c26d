mod cli;
mod layout;
mod nifti;
mod participant;
mod transforms;
mod util;
mod validator;
