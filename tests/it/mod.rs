mod cli;
mod layout;
mod nifti;
mod participant;
mod registration;
mod transforms;
mod util;
mod validator;
